"""The workload API: desired state in, per-cluster delivery state out.

Reading needs a viewer; creating, changing and deleting needs an operator, and the
admission policy (`app.access.admission`) may still refuse a manifest to anyone but an
admin (403 naming the object and the rule). Everything is seen through the principal's
cluster scope: a scoped principal sees the workloads written with its own scope, and of
their deliveries only those to its clusters; what it writes is placed only on clusters of
its scope. Every change is in the audit log, written in the change's transaction.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response

from app.access.admission import AdmissionPolicy
from app.access.roles import ClusterScope, Principal, Role
from app.placement.dispatcher import choose_clusters
from app.placement.spec import NAME_PATTERN, Placement, WorkloadSpec
from app.store import workloads as store
from app.store.workloads import DeliveryRow, WorkloadExists, WorkloadNotFound, WorkloadRow
from app.web.auth import OperatorDep, ViewerDep, audit_record, needs, record_failure
from app.web.deps import HubDep
from app.web.openapi import WRITE_ERRORS
from app.web.resilience import RetryingRoute

router = APIRouter(
    tags=["workloads"],
    route_class=RetryingRoute,
    dependencies=[needs(Role.VIEWER)],
    responses=WRITE_ERRORS,
)
NameParam = Annotated[str, Path(max_length=63, pattern=NAME_PATTERN)]


def policy_of(request: Request) -> AdmissionPolicy:
    policy: AdmissionPolicy = request.app.state.admission
    return policy


def values_of(spec: WorkloadSpec, scope: ClusterScope) -> dict[str, Any]:
    return {
        "name": spec.name,
        "manifests": spec.manifests,
        "update_strategy": str(spec.update_strategy),
        "delete_option": str(spec.delete_option),
        "feedback_rules": [
            r.model_dump(by_alias=True, exclude_none=True) for r in spec.feedback_rules
        ],
        "placement": spec.placement.model_dump(by_alias=True, exclude_none=True),
        "scope": scope.text,
    }


def visible_scope(principal: Principal) -> str | None:
    """The workload scope a principal sees (None: every workload)."""
    return None if principal.scope.everything else principal.scope.text


async def admit(request: Request, principal: Principal, spec: WorkloadSpec, action: str) -> None:
    """403 naming each refused manifest and its rule; the refusal is audited."""
    refusals = policy_of(request).refusals(spec.manifests, principal.role)
    if refusals:
        detail = "; ".join(str(r) for r in refusals)
        await record_failure(request, action, spec.name, detail, principal)
        raise HTTPException(403, f"refused by the admission policy: {detail}")


def delivery_json(row: DeliveryRow) -> dict[str, Any]:
    return {
        "cluster": row.cluster,
        "state": row.state,
        "versionWanted": row.version_wanted,
        "versionSent": row.version_sent,
        "versionApplied": row.version_acked,
        "conditions": row.conditions,
        "feedback": row.feedback,
        "lastError": row.last_error or None,
        "attempts": row.attempts,
        "sentAt": row.sent_at or None,
        "updatedAt": row.updated_at or None,
    }


def workload_json(w: WorkloadRow, rows: list[DeliveryRow]) -> dict[str, Any]:
    return {
        "name": w.name,
        "version": w.version,
        "manifests": w.manifests,
        "placement": w.placement,
        "updateStrategy": w.update_strategy,
        "deleteOption": w.delete_option,
        "feedbackRules": w.feedback_rules,
        "deleting": w.deleting,
        "createdAt": w.created_at,
        "updatedAt": w.updated_at,
        "clusterScope": w.scope or None,
        "clusters": [delivery_json(r) for r in rows],
    }


async def visible_labels(hub: HubDep, scope: ClusterScope) -> dict[str, dict[str, str]]:
    """Cluster -> labels, of the clusters in `scope`."""
    labels = await store.cluster_labels(hub.engine)
    return {c: lab for c, lab in labels.items() if scope.admits(lab)}


async def deliveries_in_scope(
    hub: HubDep, scope: ClusterScope, workload: str | None = None
) -> list[DeliveryRow]:
    rows = await store.deliveries_of(hub.engine, workload)
    if scope.everything:
        return rows
    labels = await store.cluster_labels(hub.engine)
    return [r for r in rows if scope.admits(labels.get(r.cluster))]


async def preview(
    hub: HubDep, placement: Placement, scope: ClusterScope, current: set[str] | None = None
) -> dict[str, Any]:
    """Which clusters of `scope` the placement picks now; clusters named but unknown, or
    out of scope, are reported alike as unknown."""
    labels = await visible_labels(hub, scope)
    raw = placement.model_dump(by_alias=True, exclude_none=True)
    chosen = choose_clusters(raw, labels, current or set())
    warnings = []
    if not chosen:
        warnings.append("the placement matches no cluster (allowed: it applies when one joins)")
    unknown = [c for c in placement.clusters if c not in labels]
    if unknown:
        warnings.append(f"unknown clusters: {', '.join(unknown)}")
    return {"clusters": chosen, "warnings": warnings}


@router.post("/placements/preview")
async def placement_preview(
    placement: Placement, hub: HubDep, principal: ViewerDep
) -> dict[str, Any]:
    """Which clusters a placement would pick now, without saving anything."""
    return await preview(hub, placement, principal.scope)


@router.post("/workloads", status_code=201)
async def create_workload(
    spec: WorkloadSpec, request: Request, hub: HubDep, principal: OperatorDep
) -> dict[str, Any]:
    await admit(request, principal, spec, "workload.create")
    audit = audit_record(request, principal, "workload.create", spec.name, detail="version 1")
    try:
        w = await store.create_workload(
            hub.engine, values_of(spec, principal.scope), time.time(), hub.writer.lock, audit=audit
        )
    except WorkloadExists as exc:
        raise HTTPException(409, str(exc)) from None
    hub.dispatcher.wake()
    warnings = (await preview(hub, spec.placement, principal.scope))["warnings"]
    return {**workload_json(w, []), "warnings": warnings}


@router.get("/workloads")
async def list_workloads(hub: HubDep, principal: ViewerDep) -> dict[str, Any]:
    rows = await deliveries_in_scope(hub, principal.scope)
    by_workload: dict[str, list[DeliveryRow]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, []).append(row)
    listed = await store.list_workloads(hub.engine, scope=visible_scope(principal))
    return {"items": [workload_json(w, by_workload.get(w.name, [])) for w in listed]}


async def _require(hub: HubDep, name: str, principal: Principal) -> WorkloadRow:
    w = await store.get_workload(hub.engine, name, scope=visible_scope(principal))
    if w is None:
        raise HTTPException(404, f"unknown workload {name!r}")
    return w


@router.get("/workloads/{name}")
async def get_workload(name: NameParam, hub: HubDep, principal: ViewerDep) -> dict[str, Any]:
    w = await _require(hub, name, principal)
    return workload_json(w, await deliveries_in_scope(hub, principal.scope, name))


@router.put("/workloads/{name}")
async def put_workload(
    name: NameParam, spec: WorkloadSpec, request: Request, hub: HubDep, principal: OperatorDep
) -> dict[str, Any]:
    """A new version. Its cluster scope becomes the writer's."""
    if spec.name != name:
        raise HTTPException(400, f"the body names workload {spec.name!r}, the path {name!r}")
    await admit(request, principal, spec, "workload.update")
    audit = audit_record(request, principal, "workload.update", name)
    try:
        w = await store.update_workload(
            hub.engine,
            values_of(spec, principal.scope),
            time.time(),
            hub.writer.lock,
            scope=visible_scope(principal),
            audit=audit,
        )
    except WorkloadNotFound:
        raise HTTPException(404, f"unknown workload {name!r}") from None
    hub.dispatcher.wake()
    return workload_json(w, await deliveries_in_scope(hub, principal.scope, name))


@router.delete("/workloads/{name}", status_code=202, response_class=Response)
async def delete_workload(
    name: NameParam, request: Request, hub: HubDep, principal: OperatorDep
) -> Response:
    """Removes the workload from every cluster (objects deleted with `Foreground`, left with
    `Orphan`), then forgets it."""
    try:
        await store.mark_deleting(
            hub.engine,
            name,
            time.time(),
            hub.writer.lock,
            scope=visible_scope(principal),
            audit=audit_record(request, principal, "workload.delete", name),
        )
    except WorkloadNotFound:
        raise HTTPException(404, f"unknown workload {name!r}") from None
    hub.dispatcher.wake()
    return Response(status_code=202)


@router.get("/workloads/{name}/clusters")
async def workload_clusters(name: NameParam, hub: HubDep, principal: ViewerDep) -> dict[str, Any]:
    w = await _require(hub, name, principal)
    rows = await deliveries_in_scope(hub, principal.scope, name)
    scope = ClusterScope.parse(w.scope) if principal.scope.everything else principal.scope
    current = {r.cluster for r in rows if not r.removing}
    now = await preview(hub, Placement.model_validate(w.placement), scope, current)
    return {"matching": now["clusters"], "deliveries": [delivery_json(r) for r in rows]}
