"""The agent's side of workload delivery: apply what the hub places, report status, fix drift.

Contract (ACK mode, as KubeEdge's CloudHub): a version is acknowledged, by a status
message, only after it was applied; a duplicate or older version is not applied again but
answered with the current status, so the hub's resends are harmless. Removal is
acknowledged likewise. Held versions live in memory: after a restart the agent holds
nothing, tells the hub so on connect (`WorkloadResync`), and gets everything again.

A version whose manifests fail the shared shape check (`app.informer.manifests`) is
applied not at all: it is held as failed (`Applied` False, reason `InvalidManifest`, and
the message as the status's error, which the hub shows as `Failed`); a resend of it gets
the same answer, and a later version is applied as usual. `hold_failed` does the same for
a version whose apply failed unexpectedly, so no manifest can make the agent stop serving.

Drift, checked every `drift_s`: an applied object changed or deleted on the cluster is
restored (`ServerSideApply`), recreated only if deleted (`CreateOnly`), or only reported as
`Degraded` (`ReadOnly` never writes: it reports what exists).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.agent.sources.base import WorkloadTarget
from app.informer.manifests import InvalidManifest, check_manifests
from app.informer.objects import KindKey, KubeObject
from app.transport.messages import WorkloadApply, WorkloadRemove, WorkloadStatus

log = logging.getLogger(__name__)

OWNER_LABEL = "transport-informer.io/workload"
ObjectKey = tuple[KindKey, str, str]


def object_key(manifest: KubeObject) -> ObjectKey:
    """The key of a manifest that passed `check_manifests`."""
    meta = manifest["metadata"]
    return (
        KindKey(manifest["apiVersion"], manifest["kind"]),
        meta.get("namespace") or "",
        meta["name"],
    )


def _owned(manifest: KubeObject, workload: str) -> KubeObject:
    obj = orjson.loads(orjson.dumps(manifest))
    meta = obj["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), OWNER_LABEL: workload}
    return dict(obj)


def _desired_part(obj: KubeObject) -> Any:
    """What drift compares: everything but metadata bookkeeping and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _holds(current: Any, desired: Any) -> bool:
    """`current` has every field `desired` sets, with the same values. Fields the server
    added (defaults such as a Deployment's strategy) are not drift."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            k in current and _holds(current[k], v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(_holds(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)


def drifted(current: KubeObject, desired: KubeObject) -> bool:
    return not _holds(_desired_part(current), _desired_part(desired))


def json_path(obj: Any, path: str) -> Any:
    """Evaluate a `.a.b[0].c` path; None where it leads nowhere."""
    for name, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?", path):
        obj = obj.get(name) if isinstance(obj, dict) else None
        if index and isinstance(obj, list):
            obj = obj[int(index)] if int(index) < len(obj) else None
        if obj is None:
            return None
    return obj


def _condition(type_: str, ok: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def _status_hash(conditions: list[dict[str, Any]], feedback: dict[str, Any], error: str) -> str:
    return hashlib.sha256(
        orjson.dumps([conditions, feedback, error], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()[:16]


@dataclass
class _Held:
    spec: WorkloadApply
    objects: dict[ObjectKey, KubeObject] = field(default_factory=dict)
    """Desired objects (with the owner label) by key."""
    error: str = ""
    status: WorkloadStatus | None = None
    sent_hash: str = ""
    failed: bool = False
    """This version was not applied (`status` says why); it is never checked or repaired."""


class WorkloadRunner:
    def __init__(
        self,
        target: WorkloadTarget,
        send: Callable[[WorkloadStatus], None],
        *,
        drift_s: float = 1.0,
    ) -> None:
        self._target = target
        self._send = send
        self._drift_s = drift_s
        self._held: dict[str, _Held] = {}
        self._lock = asyncio.Lock()

    def held_versions(self) -> dict[str, int]:
        return {name: held.spec.version for name, held in self._held.items()}

    def status(self, workload: str) -> WorkloadStatus | None:
        """The latest status of a held workload (None if not held, or not evaluated yet)."""
        held = self._held.get(workload)
        return held.status if held else None

    def resend_differing(self, hub_hashes: dict[str, str]) -> None:
        """OCM's status resync: send the status of every held workload whose hash the hub
        does not have (only what changed while the hub was not listening)."""
        for name, held in self._held.items():
            if held.status is not None and hub_hashes.get(name) != held.status.status_hash:
                self._report(held, force=True)

    async def apply(self, spec: WorkloadApply) -> None:
        async with self._lock:
            held = self._held.get(spec.workload)
            if held is not None and spec.version <= held.spec.version:
                self._report(held, force=True)  # a duplicate or stale resend: ack again
                return
            try:
                check_manifests(spec.manifests)
            except InvalidManifest as exc:
                log.warning("workload %s version %d: %s", spec.workload, spec.version, exc)
                self._hold_failed(spec, "InvalidManifest", str(exc))
                return
            desired = {object_key(m): _owned(m, spec.workload) for m in spec.manifests}
            if held is not None and held.spec.delete_option == "Foreground":
                for key in held.objects.keys() - desired.keys():
                    await self._target.delete_object(*key)
            held = self._held[spec.workload] = _Held(spec, desired)
            held.error = ""
            if spec.update_strategy != "ReadOnly":
                for key, obj in desired.items():
                    try:
                        await self._target.apply_object(obj)
                    except Exception as exc:  # reported, retried by the drift loop
                        held.error = f"{key[0].kind} {key[1]}/{key[2]}: {exc}"
                        log.warning("workload %s: %s", spec.workload, held.error)
            await self._check_and_report(held)

    async def hold_failed(self, spec: WorkloadApply, message: str) -> None:
        """Answer `spec` as failed (reason `ApplyFailed`) without touching the cluster: for
        an apply that raised unexpectedly. A newer held version is left as it is."""
        async with self._lock:
            held = self._held.get(spec.workload)
            if held is not None and held.spec.version > spec.version:
                self._report(held, force=True)
                return
            self._hold_failed(spec, "ApplyFailed", message)

    def _hold_failed(self, spec: WorkloadApply, reason: str, message: str) -> None:
        """Hold `spec` as failed and report it. The objects of the version held before stay
        known, so a later version or a removal still deletes them (`Foreground`)."""
        previous = self._held.get(spec.workload)
        conditions = [
            _condition("Applied", False, reason, message),
            _condition("Available", False, "NotApplied"),
        ]
        held = _Held(spec, dict(previous.objects) if previous else {}, error=message, failed=True)
        held.status = WorkloadStatus(
            spec.workload,
            spec.version,
            False,
            conditions,
            {},
            message,
            _status_hash(conditions, {}, message),
        )
        self._held[spec.workload] = held
        self._report(held, force=True)

    async def _check_and_report(self, held: _Held) -> None:
        held.sent_hash = ""  # an apply is always acknowledged
        await self._check(held)

    async def remove(self, request: WorkloadRemove) -> None:
        async with self._lock:
            held = self._held.get(request.workload)
            version = held.spec.version if held else request.version
            try:
                if request.delete_option == "Foreground":
                    # by the owner label too: an agent restarted since the apply holds nothing
                    owned = await self._target.labelled(OWNER_LABEL, request.workload)
                    for key in {*(held.objects if held else ()), *owned}:
                        await self._target.delete_object(*key)
            except Exception as exc:  # not acknowledged: the hub sends the removal again
                error = f"removing failed: {exc}"
                log.warning("workload %s: %s", request.workload, error)
                self._send(WorkloadStatus(request.workload, version, False, [], {}, error, ""))
                return
            self._held.pop(request.workload, None)
            self._send(WorkloadStatus(request.workload, version, True, [], {}, "", ""))

    async def run(self) -> None:
        """Check drift and status until cancelled."""
        while True:
            await asyncio.sleep(self._drift_s)
            async with self._lock:
                for held in list(self._held.values()):
                    await self._check(held)

    async def _check(self, held: _Held) -> None:
        """Repair, evaluate and report one workload; a failing cluster API is reported as
        the workload's error, and checked again next period (the agent keeps running)."""
        if held.failed:
            return
        held.error = ""  # set again below (by a failing apply or read) if it still fails
        try:
            await self._repair(held)
            await self._evaluate(held)
        except Exception as exc:
            held.error = f"checking the cluster failed: {exc}"
            log.warning("workload %s: %s", held.spec.workload, held.error)
            if held.status is not None:
                held.status = dataclasses.replace(
                    held.status, error=held.error, status_hash=f"error:{held.error}"[:64]
                )
        self._report(held)

    async def _repair(self, held: _Held) -> None:
        strategy = held.spec.update_strategy
        if strategy == "ReadOnly":
            return
        for key, desired in held.objects.items():
            current = await self._target.get_object(*key)
            missing = current is None
            changed = not missing and drifted(current or {}, desired)
            if missing or (changed and strategy == "ServerSideApply"):
                log.info(
                    "workload %s: %s %s/%s %s; restoring",
                    held.spec.workload,
                    key[0].kind,
                    key[1],
                    key[2],
                    "deleted" if missing else "changed",
                )
                try:
                    await self._target.apply_object(desired)
                except Exception as exc:
                    held.error = f"{key[0].kind} {key[1]}/{key[2]}: {exc}"

    async def _evaluate(self, held: _Held) -> None:
        current = {key: await self._target.get_object(*key) for key in held.objects}
        missing = [k for k, obj in current.items() if obj is None]
        changed = [
            k for k, obj in current.items() if obj is not None and drifted(obj, held.objects[k])
        ]
        applied = held.spec.update_strategy == "ReadOnly" or not held.error
        available = not missing and all(_ready(obj) for obj in current.values() if obj)
        degraded = bool(missing or changed)
        conditions = [
            _condition("Applied", applied, "Applied" if applied else "ApplyFailed", held.error),
            _condition(
                "Available",
                available,
                "ObjectsReady" if available else "NotReady",
                f"{len(missing)} missing" if missing else "",
            ),
            _condition(
                "Degraded",
                degraded,
                "Drifted" if degraded else "AsDesired",
                ", ".join(f"{k[0].kind} {k[1]}/{k[2]}" for k in missing + changed)[:500],
            ),
        ]
        feedback: dict[str, Any] = {}
        for rule in held.spec.feedback_rules:
            for key, obj in current.items():
                if obj is None or (rule.get("kind") and rule["kind"] != key[0].kind):
                    continue
                value = json_path(obj, str(rule.get("jsonPath", "")))
                if value is not None:
                    feedback.setdefault(str(rule.get("name")), {})[
                        f"{key[0].kind}/{key[1] or '_'}/{key[2]}"
                    ] = value
        held.status = WorkloadStatus(
            held.spec.workload,
            held.spec.version,
            False,
            conditions,
            feedback,
            held.error,
            _status_hash(conditions, feedback, held.error),
        )

    def _report(self, held: _Held, *, force: bool = False) -> None:
        status = held.status
        if status is None:
            return
        if force or status.status_hash != held.sent_hash:
            held.sent_hash = status.status_hash
            self._send(status)


def _ready(obj: KubeObject) -> bool:
    """Ready replicas reach the wanted count where the object says both; else it exists."""
    wanted = (obj.get("spec") or {}).get("replicas")
    status = obj.get("status") or {}
    if isinstance(wanted, int) and "readyReplicas" in status:
        return bool(status.get("readyReplicas", 0) >= wanted)
    return True
