"""The workload API: desired state in, per-cluster delivery state out."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from app.placement.dispatcher import choose_clusters
from app.placement.spec import Placement, WorkloadSpec
from app.store import workloads as store
from app.store.workloads import DeliveryRow, WorkloadExists, WorkloadNotFound, WorkloadRow
from app.web.deps import HubDep
from app.web.resilience import RetryingRoute

router = APIRouter(tags=["workloads"], route_class=RetryingRoute)


def _values(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "manifests": spec.manifests,
        "update_strategy": str(spec.update_strategy),
        "delete_option": str(spec.delete_option),
        "feedback_rules": [
            r.model_dump(by_alias=True, exclude_none=True) for r in spec.feedback_rules
        ],
        "placement": spec.placement.model_dump(by_alias=True, exclude_none=True),
    }


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
        "clusters": [delivery_json(r) for r in rows],
    }


async def preview(
    hub: HubDep, placement: Placement, current: set[str] | None = None
) -> dict[str, Any]:
    labels = await store.cluster_labels(hub.engine)
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
async def placement_preview(placement: Placement, hub: HubDep) -> dict[str, Any]:
    """Which clusters a placement would pick now, without saving anything."""
    return await preview(hub, placement)


@router.post("/workloads", status_code=201)
async def create_workload(spec: WorkloadSpec, hub: HubDep) -> dict[str, Any]:
    try:
        w = await store.create_workload(hub.engine, _values(spec), time.time(), hub.writer.lock)
    except WorkloadExists as exc:
        raise HTTPException(409, str(exc)) from None
    hub.dispatcher.wake()
    return {
        **workload_json(w, []),
        **{"warnings": (await preview(hub, spec.placement))["warnings"]},
    }


@router.get("/workloads")
async def list_workloads(hub: HubDep) -> dict[str, Any]:
    rows = await store.deliveries_of(hub.engine)
    by_workload: dict[str, list[DeliveryRow]] = {}
    for row in rows:
        by_workload.setdefault(row.workload, []).append(row)
    return {
        "items": [
            workload_json(w, by_workload.get(w.name, []))
            for w in await store.list_workloads(hub.engine)
        ]
    }


async def _require(hub: HubDep, name: str) -> WorkloadRow:
    w = await store.get_workload(hub.engine, name)
    if w is None:
        raise HTTPException(404, f"unknown workload {name!r}")
    return w


@router.get("/workloads/{name}")
async def get_workload(name: str, hub: HubDep) -> dict[str, Any]:
    w = await _require(hub, name)
    return workload_json(w, await store.deliveries_of(hub.engine, name))


@router.put("/workloads/{name}")
async def put_workload(name: str, spec: WorkloadSpec, hub: HubDep) -> dict[str, Any]:
    if spec.name != name:
        raise HTTPException(400, f"the body names workload {spec.name!r}, the path {name!r}")
    try:
        w = await store.update_workload(hub.engine, _values(spec), time.time(), hub.writer.lock)
    except WorkloadNotFound:
        raise HTTPException(404, f"unknown workload {name!r}") from None
    hub.dispatcher.wake()
    return workload_json(w, await store.deliveries_of(hub.engine, name))


@router.delete("/workloads/{name}", status_code=202)
async def delete_workload(name: str, hub: HubDep) -> Response:
    """Removes the workload from every cluster (objects deleted with `Foreground`, left with
    `Orphan`), then forgets it."""
    try:
        await store.mark_deleting(hub.engine, name, time.time(), hub.writer.lock)
    except WorkloadNotFound:
        raise HTTPException(404, f"unknown workload {name!r}") from None
    hub.dispatcher.wake()
    return Response(status_code=202)


@router.get("/workloads/{name}/clusters")
async def workload_clusters(name: str, hub: HubDep) -> dict[str, Any]:
    w = await _require(hub, name)
    rows = await store.deliveries_of(hub.engine, name)
    now = await preview(
        hub, Placement.model_validate(w.placement), {r.cluster for r in rows if not r.removing}
    )
    return {"matching": now["clusters"], "deliveries": [delivery_json(r) for r in rows]}
