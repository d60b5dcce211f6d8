"""The JSON API: clusters, resources, rejections (viewer and above, within the principal's
cluster scope: a cluster out of scope answers 404 like one that does not exist)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from app.access.roles import Role
from app.store import queries, rejections
from app.store.queries import MAX_LIMIT, AmbiguousKind, BadCursor, ResourceQuery
from app.web.auth import ViewerDep, needs
from app.web.deps import ApiVersionParam, EngineDep, HubDep, QueryDep, kind_ref
from app.web.openapi import READ_ERRORS
from app.web.resilience import RetryingRoute
from app.web.wire import iso_time

router = APIRouter(
    route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)], responses=READ_ERRORS
)

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="page size")]
ContinueParam = Annotated[
    str | None, Query(alias="continue", max_length=4096, description="opaque cursor")
]
ClusterParam = Annotated[str, Path(max_length=253)]


def over_quota(hub: HubDep) -> dict[str, dict[str, Any]]:
    """Clusters over their ingest quota now: since when (ISO) and how many messages dropped."""
    return {
        name: {"since": iso_time(o.since), "dropped": o.dropped}
        for name, o in hub.over_quota().items()
    }


async def _clusters_json(hub: HubDep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        served = await hub.registry.served_by([r["name"] for r in rows])
    except Exception:  # Redis away: the inventory still answers
        served = {}
    throttled = over_quota(hub)
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
            "overQuota": throttled.get(r["name"]),
        }
        for r in rows
    ]


@router.get("/clusters", tags=["clusters"])
async def list_clusters(hub: HubDep, engine: EngineDep, principal: ViewerDep) -> dict[str, Any]:
    rows = await queries.cluster_rows(engine, scope=principal.scope)
    return {"items": await _clusters_json(hub, rows)}


async def _require_cluster(
    hub: HubDep, engine: EngineDep, cluster: str, principal: ViewerDep
) -> dict[str, Any]:
    """The cluster's JSON; 404 if it is unknown or out of the principal's scope (the same
    answer, so a scoped token cannot learn which other clusters exist)."""
    rows = await queries.cluster_rows(engine, cluster, scope=principal.scope)
    if not rows:
        raise HTTPException(404, f"unknown cluster {cluster!r}")
    return (await _clusters_json(hub, rows))[0]


@router.get("/clusters/{cluster}", tags=["clusters"])
async def get_cluster(
    cluster: ClusterParam, hub: HubDep, engine: EngineDep, principal: ViewerDep
) -> dict[str, Any]:
    return await _require_cluster(hub, engine, cluster, principal)


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
    cluster: ClusterParam,
    hub: HubDep,
    engine: EngineDep,
    query: QueryDep,
    principal: ViewerDep,
    limit: LimitParam = 100,
    cursor: ContinueParam = None,
) -> dict[str, Any]:
    """Objects stored for one cluster, filtered like `kubectl get` (label and field selectors)."""
    await _require_cluster(hub, engine, cluster, principal)
    return await _page(engine, dataclasses.replace(query, cluster=cluster), limit, cursor)


@router.get("/clusters/{cluster}/resources/{kind}/{namespace}/{name}", tags=["resources"])
async def get_cluster_resource(
    cluster: ClusterParam,
    kind: Annotated[str, Path(max_length=316)],
    namespace: Annotated[str, Path(max_length=63)],
    name: Annotated[str, Path(max_length=253)],
    hub: HubDep,
    engine: EngineDep,
    principal: ViewerDep,
    api_version: ApiVersionParam = None,
) -> dict[str, Any]:
    """One object; `_` as namespace for cluster-scoped kinds.

    `kind` is `Kind`, `Kind.group` (`Event.events.k8s.io`) or `Kind.` (the core group).
    A bare `Kind` that matches objects of several apiVersions at this namespace/name
    answers 409, naming them.
    """
    ref = kind_ref(kind, api_version)
    await _require_cluster(hub, engine, cluster, principal)
    try:
        body = await queries.get_resource(
            engine, cluster, ref, namespace, name, api_version=api_version
        )
    except AmbiguousKind as exc:
        raise HTTPException(409, str(exc)) from None
    if body is None:
        raise HTTPException(404, f"{kind} {namespace}/{name} not found in cluster {cluster!r}")
    return body


@router.get("/rejections", tags=["health"])
async def list_rejections(
    engine: EngineDep,
    hub: HubDep,
    principal: ViewerDep,
    cluster: Annotated[str | None, Query(max_length=253)] = None,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=rejections.MAX_LIMIT)] = 100,
    cursor: ContinueParam = None,
) -> dict[str, Any]:
    """What clusters sent that the hub refused, newest first (the dead-letter table:
    rate-limited per cluster and trimmed to `retain_rejections`); `counts` is every refusal
    since this hub started, by reason (fleet-wide, so empty for a scoped principal)."""
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) < 19):
        raise HTTPException(400, "invalid continue token")
    page = await rejections.list_rejections(
        engine,
        cluster=cluster,
        reason=reason,
        limit=limit,
        before=int(cursor) if cursor is not None else None,
        scope=principal.scope,
    )
    counts = hub.ingest.stats.rejected if principal.scope.everything else {}
    return {
        "items": [{**r, "at": iso_time(r["at"])} for r in page.items],
        "continue": str(page.next_before) if page.next_before is not None else None,
        "counts": dict(sorted(counts.items())),
    }


@router.get("/resources", tags=["resources"])
async def list_resources(
    engine: EngineDep, query: QueryDep, limit: LimitParam = 100, cursor: ContinueParam = None
) -> dict[str, Any]:
    """The same query across every cluster; each item carries its `cluster`."""
    return await _page(engine, query, limit, cursor)
