"""The fleet overview (`/`) and its live stream (`/ui/stream/fleet`), at any fleet size.

A dense table of the clusters the principal's scope admits: searched by name, filtered by
labels and by state, sorted, paged (by offset: see `docs/dashboard.md`), with a health
summary above it. Page and stream take the same query parameters and mean the same view
(`FleetView`); both come from the process' one `FleetPulse`, so what a page shows and what
its stream then updates agree.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse

from app.access.roles import Principal, Role
from app.informer.selectors import MAX_SELECTOR_CHARS, LabelSelector, SelectorError
from app.store.fleet import kind_counts
from app.web.auth import ViewerDep, needs
from app.web.deps import HubDep
from app.web.fleet import (
    DESCENDING_FIRST,
    MAX_PAGE,
    MAX_PAGE_SIZE,
    MAX_SEARCH_CHARS,
    MIN_PAGE_SIZE,
    PAGE_SIZE,
    FleetView,
    Show,
    Sort,
)
from app.web.pages import render_page
from app.web.pulse import FleetPulse, fleet_events
from app.web.resilience import RetryingRoute
from app.web.streams import event_stream

router = APIRouter(
    include_in_schema=False, route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)]
)
SORT_LABELS: dict[Sort, str] = {
    "state": "State",
    "name": "Name",
    "seen": "Last seen",
    "objects": "Objects",
    "rate": "Changes/s",
}
SHOW_LABELS: dict[Show, str] = {
    "all": "all clusters",
    "problems": "problems",
    "offline": "offline",
    "overquota": "over quota",
    "refusing": "refusing",
    "unsynced": "not synced",
    "online": "online",
}


@dataclass(frozen=True, slots=True)
class FleetParams:
    """The overview's query parameters, bounded (422 otherwise)."""

    q: str
    selector: str
    show: Show
    sort: Sort
    dir: Literal["", "asc", "desc"]
    page: int
    size: int

    def query(self, **changes: Any) -> dict[str, Any]:
        """The query string's parameters (defaults left out), with `changes`."""
        raw: dict[str, Any] = {
            "q": self.q,
            "labelSelector": self.selector,
            "show": self.show,
            "sort": self.sort,
            "dir": self.dir,
            "page": self.page,
            "size": self.size,
        }
        raw.update(changes)
        defaults = {"show": "all", "sort": "state", "page": 1, "size": PAGE_SIZE, "dir": ""}
        return {k: v for k, v in raw.items() if v not in ("", None) and defaults.get(k) != v}

    def descending(self) -> bool:
        return self.dir == "desc" if self.dir else self.sort in DESCENDING_FIRST


def fleet_params(
    q: Annotated[str, Query(max_length=MAX_SEARCH_CHARS)] = "",
    selector: Annotated[str, Query(alias="labelSelector", max_length=MAX_SELECTOR_CHARS)] = "",
    show: Show = "all",
    sort: Sort = "state",
    dir: Literal["", "asc", "desc"] = "",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    size: Annotated[int, Query(ge=MIN_PAGE_SIZE, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
) -> FleetParams:
    return FleetParams(q.strip(), selector.strip(), show, sort, dir, page, size)


FleetParamsDep = Annotated[FleetParams, Depends(fleet_params)]


def view_of(params: FleetParams, principal: Principal) -> FleetView:
    """Raises SelectorError for a label selector that does not parse."""
    return FleetView(
        scope=principal.scope,
        q=params.q.lower(),
        labels=LabelSelector.parse(params.selector),
        show=params.show,
        sort=params.sort,
        desc=params.descending(),
        page=params.page,
        size=params.size,
    )


def narrowed(selector: str, key: str, value: str | None) -> str:
    """`selector` with its terms on `key` replaced by `key=value` (`!key` for None): what
    a click on a label group shows."""
    try:
        kept = [r for r in LabelSelector.parse(selector).requirements if r.key != key]
    except SelectorError:
        kept = []
    term = f"!{key}" if value is None else f"{key}={value}"
    return ",".join([LabelSelector(tuple(kept)).canonical(), term] if kept else [term])


def _pulse(request: Request) -> FleetPulse:
    pulse: FleetPulse = request.app.state.pulse
    return pulse


@router.get("/", response_class=HTMLResponse)
async def overview(
    request: Request, hub: HubDep, principal: ViewerDep, params: FleetParamsDep
) -> HTMLResponse:
    """The full page; an htmx request (search, filter, sort, page) gets `#fleet` alone."""
    error = None
    try:
        view = view_of(params, principal)
    except SelectorError as exc:
        error = f"bad selector: {exc}"
        view = view_of(dataclasses.replace(params, selector=""), principal)
    page = await _pulse(request).page(view)
    kinds = await kind_counts(hub.engine, [r.name for r in page.rows])
    partial = "HX-Request" in request.headers and "HX-Boosted" not in request.headers
    response = await render_page(
        request,
        hub,
        "_fleet.html" if partial else "overview.html",
        page=page,
        params=params,
        kinds=kinds,
        error=error,
        sorts=SORT_LABELS,
        shows=SHOW_LABELS,
        narrow=functools.partial(narrowed, params.selector),
    )
    if error:
        response.status_code = 400
    return response


@router.get("/ui/stream/fleet")
async def fleet_stream(
    request: Request, principal: ViewerDep, params: FleetParamsDep
) -> EventSourceResponse:
    """Every tick, the page of the view these parameters name (as `/` shows it) and its
    summary, as JSON (`FleetPage.json`)."""
    try:
        view = view_of(params, principal)
    except SelectorError as exc:
        raise HTTPException(400, f"bad selector: {exc}") from None
    return event_stream(request, principal, fleet_events(_pulse(request), view))
