"""The dashboard: server-rendered pages (usable without JavaScript) made live by htmx + SSE.

Pages and the JSON API share `app.store.queries`; these routes only shape its results.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sse_starlette import EventSourceResponse

from app.access.roles import Principal, Role
from app.store import queries, rejections
from app.store.kinds import KindRef, count_key_filter, kind_filter
from app.store.queries import MAX_INT, ORDERS, AmbiguousKind, BadCursor, Order, ResourceQuery
from app.store.records import ChangeRecord
from app.web import render
from app.web.auth import ViewerDep, csrf_token, needs
from app.web.deps import ApiVersionParam, HubDep, QueryDep, kind_ref
from app.web.live import RenderCache, change_fragments
from app.web.resilience import RetryingRoute
from app.web.streams import event_stream

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
PAGE_SIZE = 50

router = APIRouter(
    include_in_schema=False, route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)]
)
SinceParam = Annotated[int, Query(ge=0, le=MAX_INT)]


def build_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env = templates.env
    env.filters.update(
        ago=render.ago,
        age=render.age,
        status=render.status_summary,
        row_id=render.row_id,
        count_filter=count_key_filter,
        event_time=render.event_time,
    )
    env.globals.update(
        conditions=render.conditions,
        yaml_html=render.yaml_html,
        qs=render.query_string,
        bar_segments=render.bar_segments,
    )
    return templates


def templates_of(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _cache(request: Request) -> RenderCache[str]:
    cache: RenderCache[str] = request.app.state.render_cache
    return cache


async def _health(hub: HubDep) -> dict[str, bool | None]:
    redis = await hub.registry.ping() if hub.settings.redis_url else None
    return {"database": await hub.database_ok(), "broker": hub.link.connected, "redis": redis}


def page_context(request: Request) -> dict[str, Any]:
    """What every page's frame shows: who is signed in, their CSRF token (forms and htmx
    send it back)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return {
        "principal": principal,
        "csrf": csrf_token(request, principal) if principal else "",
        "Role": Role,
    }


async def render_page(request: Request, hub: HubDep, name: str, **context: Any) -> HTMLResponse:
    return templates_of(request).TemplateResponse(
        request, name, {"health": await _health(hub), **page_context(request), **context}
    )


# -- cluster view -----------------------------------------------------------------------


def _view_query(query: ResourceQuery, cluster: str, q: str) -> ResourceQuery:
    """The query of a cluster view. Its form sends `namespace=` for "all namespaces": a
    view cannot ask for cluster-scoped objects only, as the JSON API's `namespace=` does."""
    return dataclasses.replace(
        query, cluster=cluster, namespace=query.namespace or None, name_contains=q or None
    )


def _filters(query: ResourceQuery, selector: str, field_selector: str) -> dict[str, str]:
    """The query string that reproduces a filtered view."""
    raw = {
        "kind": str(KindRef(query.kind, query.group)) if query.kind else None,
        "apiVersion": query.api_version,
        "namespace": query.namespace,
        "labelSelector": selector,
        "fieldSelector": field_selector,
        "q": query.name_contains,
    }
    return {k: v for k, v in raw.items() if v}


@router.get("/ui/clusters/{cluster}", response_class=HTMLResponse)
async def cluster_view(
    request: Request,
    cluster: str,
    hub: HubDep,
    query: QueryDep,
    principal: ViewerDep,
    q: Annotated[str, Query(max_length=253)] = "",
    sort: Order = "name",
    cursor: Annotated[str | None, Query(alias="continue", max_length=4096)] = None,
) -> HTMLResponse:
    rows = await queries.cluster_rows(hub.engine, cluster, scope=principal.scope)
    if not rows:
        raise HTTPException(404, f"unknown cluster {cluster!r}")
    query = _view_query(query, cluster, q)
    try:
        page = await queries.list_resources(
            hub.engine, query, limit=PAGE_SIZE, cursor=cursor, order=sort
        )
    except BadCursor as exc:
        raise HTTPException(400, str(exc)) from None
    params = request.query_params
    filters = _filters(query, params.get("labelSelector", ""), params.get("fieldSelector", ""))
    served = (await hub.registry.served_by([cluster])).get(cluster)
    partial = bool(request.headers.get("HX-Request"))
    refused = (
        []
        if partial
        else (
            await rejections.list_rejections(
                hub.engine, cluster=cluster, limit=10, scope=principal.scope
            )
        ).items
    )
    return await render_page(
        request,
        hub,
        "_table.html" if partial else "cluster.html",
        cluster=rows[0],
        served=served,
        refused=refused,
        throttled=hub.over_quota().get(cluster),
        page=page,
        filters=filters,
        sort=sort,
        orders=ORDERS,
        namespaces=await queries.namespaces(hub.engine, cluster),
        first_page=cursor is None,
    )


@router.get("/ui/stream/rows")
async def row_stream(
    request: Request,
    hub: HubDep,
    query: QueryDep,
    principal: ViewerDep,
    cluster: Annotated[str, Query(max_length=253)],
    since: SinceParam,
    q: Annotated[str, Query(max_length=253)] = "",
) -> EventSourceResponse:
    """Table rows of one cluster view as htmx out-of-band swaps."""
    query = _view_query(query, cluster, q)
    template = templates_of(request).get_template("_row_live.html")
    cache = _cache(request)

    def fragment(change: ChangeRecord) -> str:
        return cache.get("row", change, lambda c: template.render(change=c, obj=c.body))

    stale = templates_of(request).get_template("_stale.html").render()
    events = change_fragments(hub, query, since, fragment, event="rows", stale=stale)
    return event_stream(request, principal, events)


# -- object view ------------------------------------------------------------------------


@router.get("/ui/clusters/{cluster}/{kind}/{namespace}/{name}", response_class=HTMLResponse)
async def object_view(
    request: Request,
    cluster: str,
    kind: str,
    namespace: str,
    name: str,
    hub: HubDep,
    principal: ViewerDep,
    api_version: ApiVersionParam = None,
) -> HTMLResponse:
    """One object, named as in the JSON API (`Kind`, `Kind.group`, `Kind.`, `?apiVersion=`)."""
    ref = kind_ref(kind, api_version)
    if not await queries.cluster_rows(hub.engine, cluster, scope=principal.scope):
        raise HTTPException(404, f"unknown cluster {cluster!r}")
    try:
        stored = await queries.get_stored_object(
            hub.engine, cluster, ref, namespace, name, api_version=api_version
        )
    except AmbiguousKind as exc:
        raise HTTPException(409, str(exc)) from None
    if stored is None:
        raise HTTPException(404, f"{kind} {namespace}/{name} not found in cluster {cluster!r}")
    found = stored.kind
    history = await queries.object_history(hub.engine, cluster, found, namespace, name)
    versions = await queries.kind_versions(hub.engine, cluster, found.kind)
    collides = bool(set(versions) - {found.api_version})
    return await render_page(
        request,
        hub,
        "object.html",
        cluster=cluster,
        obj=stored.body,
        stored=stored,
        history=history,
        kind=found.kind,
        kind_filter=kind_filter(found, collides),
        namespace=namespace,
    )


# -- live feed --------------------------------------------------------------------------


@router.get("/ui/events", response_class=HTMLResponse)
async def events_page(
    request: Request,
    hub: HubDep,
    query: QueryDep,
    principal: ViewerDep,
    cluster: Annotated[str, Query(max_length=253)] = "",
) -> HTMLResponse:
    query = dataclasses.replace(query, cluster=cluster or None)
    params = request.query_params
    filters = _filters(query, params.get("labelSelector", ""), params.get("fieldSelector", ""))
    if cluster:
        filters["cluster"] = cluster
    clusters = await queries.cluster_names(hub.engine, scope=principal.scope)
    revision = await queries.current_revision(hub.engine)
    return await render_page(
        request, hub, "events.html", filters=filters, clusters=clusters, revision=revision
    )


@router.get("/ui/stream/events")
async def feed_stream(
    request: Request,
    hub: HubDep,
    query: QueryDep,
    principal: ViewerDep,
    since: SinceParam,
    cluster: Annotated[str, Query(max_length=253)] = "",
) -> EventSourceResponse:
    query = dataclasses.replace(query, cluster=cluster or None)
    template = templates_of(request).get_template("_event.html")
    cache = _cache(request)

    def fragment(change: ChangeRecord) -> str:
        return cache.get("event", change, lambda c: template.render(change=c, obj=c.body))

    stale = templates_of(request).get_template("_stale.html").render()
    events = change_fragments(hub, query, since, fragment, event="change", stale=stale)
    return event_stream(request, principal, events)
