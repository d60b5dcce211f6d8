"""The JSON API: health, clusters, resources."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse

from app.store import queries
from app.store.queries import MAX_LIMIT, AmbiguousKind, BadCursor, ResourceQuery
from app.web.deps import ApiVersionParam, EngineDep, HubDep, QueryDep, kind_ref
from app.web.wire import iso_time

router = APIRouter()

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
ContinueParam = Annotated[str | None, Query(alias="continue", description="opaque cursor")]


async def _clusters_json(hub: HubDep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        served = await hub.registry.served_by([r["name"] for r in rows])
    except Exception:  # Redis away: the inventory still answers
        served = {}
    return [
        {
            "name": r["name"],
            "labels": r["labels"],
            "online": r["online"],
            "lastSeen": iso_time(r["last_seen"]),
            "firstSeen": iso_time(r["first_seen"]),
            "servedBy": served.get(r["name"]),
            "agentVersion": r["agent_version"],
            "kinds": r["kinds"],
            "counts": r["counts"],
        }
        for r in rows
    ]


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
async def readyz(hub: HubDep) -> JSONResponse:
    checks = {"database": await hub.database_ok(), "broker": hub.link.connected}
    ready = all(checks.values())
    if hub.settings.redis_url:  # advisory: reported, but ingest and queries work without it
        checks["redis"] = await hub.registry.ping()
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/clusters", tags=["clusters"])
async def list_clusters(hub: HubDep, engine: EngineDep) -> dict[str, Any]:
    return {"items": await _clusters_json(hub, await queries.cluster_rows(engine))}


async def _require_cluster(hub: HubDep, engine: EngineDep, cluster: str) -> dict[str, Any]:
    rows = await queries.cluster_rows(engine, cluster)
    if not rows:
        raise HTTPException(404, f"unknown cluster {cluster!r}")
    return (await _clusters_json(hub, rows))[0]


@router.get("/clusters/{cluster}", tags=["clusters"])
async def get_cluster(cluster: str, hub: HubDep, engine: EngineDep) -> dict[str, Any]:
    return await _require_cluster(hub, engine, cluster)


async def _page(
    engine: EngineDep, query: ResourceQuery, limit: int, cursor: str | None
) -> dict[str, Any]:
    try:
        page = await queries.list_resources(engine, query, limit=limit, cursor=cursor)
    except BadCursor as exc:
        raise HTTPException(400, str(exc)) from None
    return {
        "items": page.items,
        "continue": page.continue_token,
        "resourceVersion": str(page.resource_version),
    }


@router.get("/clusters/{cluster}/resources", tags=["resources"])
async def list_cluster_resources(
    cluster: str,
    hub: HubDep,
    engine: EngineDep,
    query: QueryDep,
    limit: LimitParam = 100,
    cursor: ContinueParam = None,
) -> dict[str, Any]:
    """Objects stored for one cluster, filtered like `kubectl get` (label and field selectors)."""
    await _require_cluster(hub, engine, cluster)
    return await _page(engine, dataclasses.replace(query, cluster=cluster), limit, cursor)


@router.get("/clusters/{cluster}/resources/{kind}/{namespace}/{name}", tags=["resources"])
async def get_cluster_resource(
    cluster: str,
    kind: str,
    namespace: str,
    name: str,
    hub: HubDep,
    engine: EngineDep,
    api_version: ApiVersionParam = None,
) -> dict[str, Any]:
    """One object; `_` as namespace for cluster-scoped kinds.

    `kind` is `Kind`, `Kind.group` (`Event.events.k8s.io`) or `Kind.` (the core group).
    A bare `Kind` that matches objects of several apiVersions at this namespace/name
    answers 409, naming them.
    """
    ref = kind_ref(kind, api_version)
    await _require_cluster(hub, engine, cluster)
    try:
        body = await queries.get_resource(
            engine, cluster, ref, namespace, name, api_version=api_version
        )
    except AmbiguousKind as exc:
        raise HTTPException(409, str(exc)) from None
    if body is None:
        raise HTTPException(404, f"{kind} {namespace}/{name} not found in cluster {cluster!r}")
    return body


@router.get("/resources", tags=["resources"])
async def list_resources(
    engine: EngineDep, query: QueryDep, limit: LimitParam = 100, cursor: ContinueParam = None
) -> dict[str, Any]:
    """The same query across every cluster; each item carries its `cluster`."""
    return await _page(engine, query, limit, cursor)
