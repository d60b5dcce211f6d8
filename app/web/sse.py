"""`GET /stream`: changes as Server-Sent Events, resumable without loss.

Where a stream starts is the `Last-Event-ID` header, else `?resourceVersion=` (the header
wins when both are given):

- none, or empty: an `event: BOOKMARK` whose id is the current revision, then live changes.
  Browsers reconnecting after a failed connection send none, and get this fresh start.
- a revision R that the retained log still covers (R >= its oldest revision - 1) and that is
  not above the current one: every matching change after R exactly once. The stream
  subscribes to live changes first, replays the change log after R, then sends the live
  changes newer than the replay.
- R older than the retained log, or newer than the current revision (a revision from the
  future, so from another database's history, e.g. a hub whose database was replaced): one
  `event: RESET` carrying the current revision, and the stream ends. This is Kubernetes'
  410 Gone: re-list, then stream from the list's resourceVersion. Streaming on from a
  future R would silently skip every change up to it.
- anything but ASCII decimal digits (`abc`, `-1`, `1.5`): 400 with a JSON `detail`, before
  any event.

Events; `data` is one line of JSON (the TypedDicts of `app.web.wire`):

    event                       id                    data
    ADDED, MODIFIED, DELETED    the change's revision {"cluster": "prod-1", "object": {...}}
    BOOKMARK                    the current revision  {}
    RESET                       none                  {"resourceVersion": "1234"}
    CLUSTER                     none                  {"cluster": "prod-1", "online": true,
                                                       "lastSeen": "2026-11-26T04:20:00.1Z"}

- `object` is the Kubernetes object as stored after the change. For `DELETED` it is the final
  state the agent reported, or, when a relist found the object gone, its last stored state.
- `RESET`'s `resourceVersion` is the current revision, as a decimal string.
- `CLUSTER` reports a cluster going online or offline. It has no id because it is not in
  the change log, and of the filters only `cluster` applies to it. `lastSeen` is ISO 8601
  UTC as in `GET /clusters`, null if the cluster was never seen.
- A client too slow for the live feed is disconnected; it resumes from its Last-Event-ID
  out of the log.

Cost at many streams: each change is encoded (JSON and SSE framing) once per process and
per type as seen (`RenderCache[bytes]`, the change's bytes shared by every stream that
sends it), and the live changes waiting for one stream go out together in one write of
at most `MAX_BATCH` events: a stream costs a filter check and a send per wake-up, not an
encoding and a send per change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.access.roles import Role
from app.hub.feed import FeedItem
from app.hub.service import HubService
from app.store import queries
from app.store.queries import ResourceQuery
from app.store.records import ChangeRecord, ClusterStatus
from app.web.auth import ViewerDep, needs
from app.web.deps import HubDep, QueryDep
from app.web.live import MAX_BATCH, RenderCache
from app.web.openapi import STREAM_ERRORS
from app.web.resilience import RetryingRoute
from app.web.streams import event_stream
from app.web.wire import ChangeData, ClusterData, ResetData, iso_time

router = APIRouter(
    route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)], responses=STREAM_ERRORS
)


def change_event(change: ChangeRecord) -> ServerSentEvent:
    data = ChangeData(cluster=change.cluster, object=change.body)
    return ServerSentEvent(
        data=orjson.dumps(data).decode(), event=change.type, id=str(change.revision)
    )


def encoded_change(change: ChangeRecord) -> bytes:
    return change_event(change).encode()


def cluster_event(status: ClusterStatus) -> ServerSentEvent:
    data = ClusterData(
        cluster=status.name, online=status.online, lastSeen=iso_time(status.last_seen)
    )
    return ServerSentEvent(data=orjson.dumps(data).decode(), event="CLUSTER")


def reset_event(current: int) -> ServerSentEvent:
    data = ResetData(resourceVersion=str(current))
    return ServerSentEvent(data=orjson.dumps(data).decode(), event="RESET")


def _since(last_event_id: str | None, resource_version: str | None) -> int | None:
    raw = last_event_id or resource_version
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit():
        raise HTTPException(400, f"Last-Event-ID / resourceVersion must be a revision, got {raw!r}")
    return int(raw)


def _accepts(query: ResourceQuery, clusters_too: bool) -> Any:
    if query.admits_everything and clusters_too:
        return None  # the feed's "everything": no call per item

    def accepts(item: FeedItem) -> bool:
        if isinstance(item, ChangeRecord):
            return query.matches(item)
        return (
            clusters_too
            and (query.cluster is None or item.name == query.cluster)
            and query.in_scope(item.name)
        )

    return accepts


async def stream_events(
    hub: HubService, encoded: RenderCache[bytes], query: ResourceQuery, since: int | None
) -> AsyncIterator[ServerSentEvent | bytes]:
    everything = query.admits_everything
    with hub.feed.subscribe(_accepts(query, clusters_too=True), cluster=query.cluster) as sub:
        if since is None:
            last = await queries.current_revision(hub.engine)
            yield ServerSentEvent(data="{}", event="BOOKMARK", id=str(last))
        else:
            oldest = await queries.oldest_retained_revision(hub.engine)
            current = await queries.current_revision(hub.engine)
            trimmed = since < current and (oldest is None or since < oldest - 1)
            if trimmed or since > current:  # too old, or from another database's history
                yield reset_event(current)
                return
            last = since
            while True:
                page = await queries.changes_after(hub.engine, last, query)
                for change in page.changes:
                    yield change_event(change)
                last = page.last_revision
                if page.caught_up:
                    break
        while not sub.overflowed:
            items = await sub.take(MAX_BATCH)
            out: list[bytes] = []
            for item in items:
                if isinstance(item, ClusterStatus):
                    if query.in_scope(item.name):  # its labels may have changed since
                        out.append(cluster_event(item).encode())
                elif item.revision <= last:
                    continue
                elif (seen := item if everything else query.seen_as(item)) is not None:
                    last = item.revision
                    out.append(encoded.get("sse", seen, encoded_change))
            if out:
                yield b"".join(out)


@router.get("/stream", tags=["resources"], response_class=EventSourceResponse)
async def stream(
    request: Request,
    hub: HubDep,
    query: QueryDep,
    principal: ViewerDep,
    cluster: Annotated[str | None, Query(max_length=253)] = None,
    resource_version: Annotated[str | None, Query(alias="resourceVersion", max_length=32)] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
) -> EventSourceResponse:
    """Live changes matching the same filters as the lists, plus `cluster`; only clusters
    in the principal's scope (a cluster out of it streams nothing, as an unknown one)."""
    since = _since(last_event_id, resource_version)
    query = dataclasses.replace(query, cluster=cluster)
    encoded: RenderCache[bytes] = request.app.state.encoded_events
    return event_stream(request, principal, stream_events(hub, encoded, query, since))
