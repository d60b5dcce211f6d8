"""How far workloads got: the list with each workload's deliveries counted by state (and a
workload x cluster matrix while the fleet is small), and each workload's page: its counts
and its clusters, filtered and a page at a time. Both live.

Counting is one grouped SQL query (`app.store.rollout`), never a loop over deliveries;
browsers that show the same list or page share one query and render per change
(`SharedRenders`). Routed after `workload_pages` (whose `/ui/workloads/new` must win over
`/ui/workloads/{name}`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sse_starlette import EventSourceResponse

from app.access.roles import Principal, Role
from app.informer.selectors import MAX_SELECTOR_CHARS, LabelSelector, SelectorError
from app.store import rollout
from app.store import workloads as store
from app.store.delivery_state import STATES, State
from app.store.fleet import first_clusters
from app.store.workloads import DeliveryRow, WorkloadRow
from app.web import render
from app.web.auth import ViewerDep, needs
from app.web.deps import HubDep
from app.web.live import SharedRenders, Signal, rerendered
from app.web.pages import render_page, templates_of
from app.web.resilience import RetryingRoute
from app.web.streams import event_stream
from app.web.workloads import NameParam, deliveries_in_scope, visible_scope

router = APIRouter(
    include_in_schema=False, route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)]
)


MATRIX_MAX_CLUSTERS = 20
"""Up to this many clusters in scope, the list also shows a workload x cluster matrix."""
PAGE_SIZE, MAX_PAGE_SIZE, MAX_PAGE = 50, 200, 10_000


def _signal(request: Request) -> Signal:
    signal: Signal = request.app.state.workload_signal
    return signal


def _shared(request: Request) -> SharedRenders:
    shared: SharedRenders = request.app.state.shared_renders
    return shared


# -- the list: progress per workload ----------------------------------------------------


async def _list_fragment(request: Request, hub: HubDep, principal: Principal) -> str:
    """Each workload with its deliveries counted by state (one grouped query for all),
    and the matrix when the principal's fleet is small."""
    listed = await store.list_workloads(hub.engine, scope=visible_scope(principal))
    names = [w.name for w in listed]
    counts = await rollout.state_counts(hub.engine, names, scope=principal.scope)
    few = await first_clusters(hub.engine, MATRIX_MAX_CLUSTERS + 1, scope=principal.scope)
    clusters = [name for name, _labels in few] if len(few) <= MATRIX_MAX_CLUSTERS else []
    cells: dict[tuple[str, str], DeliveryRow] = {}
    if clusters and listed:
        cells = {
            (r.workload, r.cluster): r for r in await deliveries_in_scope(hub, principal.scope)
        }
    return (
        templates_of(request)
        .get_template("_workloads.html")
        .render(workloads=listed, counts=counts, clusters=clusters, cells=cells)
    )


async def _shared_list(request: Request, hub: HubDep, principal: Principal) -> str:
    async def render() -> str:
        return await _list_fragment(request, hub, principal)

    key = ("workloads", principal.scope.text)
    return await _shared(request).get(key, _signal(request).version, render)


@router.get("/ui/workloads", response_class=HTMLResponse)
async def workloads_page(request: Request, hub: HubDep, principal: ViewerDep) -> HTMLResponse:
    listing = await _shared_list(request, hub, principal)
    return await render_page(request, hub, "workloads.html", listing=listing)


@router.get("/ui/stream/workloads")
async def list_stream(request: Request, hub: HubDep, principal: ViewerDep) -> EventSourceResponse:
    """The list again after each change to any workload (at most twice a second)."""

    async def render() -> str:
        return await _shared_list(request, hub, principal)

    events = rerendered(_signal(request), render, event="workloads")
    return event_stream(request, principal, events)


# -- one workload: its clusters, a page at a time ----------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryParams:
    """The workload page's filter: bounded (422 otherwise)."""

    state: State | None
    q: str
    selector: str
    page: int
    size: int

    def query(self, **changes: Any) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "state": self.state,
            "q": self.q,
            "labelSelector": self.selector,
            "page": self.page,
            "size": self.size,
        }
        raw.update(changes)
        defaults = {"page": 1, "size": PAGE_SIZE}
        return {k: v for k, v in raw.items() if v not in ("", None) and defaults.get(k) != v}


def delivery_params(
    state: State | Literal[""] = "",
    q: Annotated[str, Query(max_length=63)] = "",
    selector: Annotated[str, Query(alias="labelSelector", max_length=MAX_SELECTOR_CHARS)] = "",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=10, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> DeliveryParams:
    return DeliveryParams(state or None, q.strip(), selector.strip(), page, size)


DeliveryParamsDep = Annotated[DeliveryParams, Depends(delivery_params)]


async def _deliveries_fragment(
    request: Request, hub: HubDep, principal: Principal, name: str, params: DeliveryParams
) -> tuple[str, bool]:
    """The workload's counts and one page of its clusters; and whether the selector was
    refused (the fragment then says why)."""
    try:
        labels = LabelSelector.parse(params.selector)
        error = None
    except SelectorError as exc:
        labels, error = LabelSelector(), f"bad selector: {exc}"
    wanted = rollout.DeliveryFilter(
        states=(params.state,) if params.state else (),
        cluster_contains=params.q,
        labels=labels,
        scope=principal.scope,
    )
    counts = (await rollout.state_counts(hub.engine, [name], scope=principal.scope)).get(name, {})
    page = await rollout.delivery_page(
        hub.engine, name, wanted, offset=(params.page - 1) * params.size, limit=params.size
    )
    pages = max(1, math.ceil(page.total / params.size))
    if params.page > pages and page.total:  # asked past the end: show the last page
        params = dataclasses.replace(params, page=pages)
        page = await rollout.delivery_page(
            hub.engine, name, wanted, offset=(pages - 1) * params.size, limit=params.size
        )
    html = (
        templates_of(request)
        .get_template("_deliveries.html")
        .render(
            name=name,
            counts=counts,
            page=page,
            pages=pages,
            params=params,
            error=error,
        )
    )
    return html, error is not None


async def _visible_workload(hub: HubDep, principal: Principal, name: str) -> WorkloadRow:
    w = await store.get_workload(hub.engine, name, scope=visible_scope(principal))
    if w is None:
        raise HTTPException(404, f"unknown workload {name!r}")
    return w


@router.get("/ui/workloads/{name}", response_class=HTMLResponse)
async def workload_page(
    request: Request,
    name: NameParam,
    hub: HubDep,
    principal: ViewerDep,
    params: DeliveryParamsDep,
) -> HTMLResponse:
    """The page; an htmx request from its filter form gets `#deliveries` alone."""
    w = await _visible_workload(hub, principal, name)
    fragment, refused = await _deliveries_fragment(request, hub, principal, w.name, params)
    if "HX-Request" in request.headers and "HX-Boosted" not in request.headers:
        response = HTMLResponse(_live_section(w.name, params, fragment))
    else:
        response = await render_page(
            request,
            hub,
            "workload.html",
            w=w,
            params=params,
            states=STATES,
            deliveries=_live_section(w.name, params, fragment),
        )
    if refused:
        response.status_code = 400
    return response


def _live_section(name: str, params: DeliveryParams, fragment: str) -> Markup:
    """`#deliveries`, re-rendered by its own stream (same parameters) after changes."""
    stream = f"/ui/stream/workloads/{quote(name)}?{render.query_string(params.query())}"
    return Markup(
        '<section id="deliveries" hx-ext="sse" sse-connect="{}" sse-swap="deliveries" '
        'hx-swap="innerHTML">{}</section>'
    ).format(stream, Markup(fragment))


@router.get("/ui/stream/workloads/{name}")
async def deliveries_stream(
    request: Request,
    name: NameParam,
    hub: HubDep,
    principal: ViewerDep,
    params: DeliveryParamsDep,
) -> EventSourceResponse:
    """`#deliveries` of this workload page again after each change to this workload (at
    most twice a second); browsers showing the same page share one render."""
    w = await _visible_workload(hub, principal, name)
    signal = _signal(request)

    async def render() -> str:
        async def fresh() -> str:
            return (await _deliveries_fragment(request, hub, principal, w.name, params))[0]

        key = ("deliveries", w.name, principal.scope.text, params)
        return await _shared(request).get(key, signal.version_of(w.name), fresh)

    events = rerendered(
        signal, render, event="deliveries", version=lambda: signal.version_of(w.name)
    )
    return event_stream(request, principal, events)
