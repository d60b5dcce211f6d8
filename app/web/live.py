"""Live parts of the dashboard: the HTML-fragment streams (the fleet overview's is in
`app.web.pulse`).

- `/ui/stream/rows` and `/ui/stream/events` send rendered HTML: table rows as htmx
  out-of-band swaps, feed items for `sse-swap`. Each change is rendered once per process
  (`RenderCache`), however many browsers show it; changes waiting for a browser go out
  together in one message. They replay from the revision the page was
  rendered at, so a reconnect (the htmx extension reconnects without Last-Event-ID) loses
  nothing; a revision no longer in the log gets a "reload" notice instead.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from sse_starlette import ServerSentEvent

from app.hub.feed import FeedItem
from app.hub.service import HubService
from app.store import queries
from app.store.queries import ResourceQuery
from app.store.records import ChangeRecord
from app.web.lru import Lru

MAX_BATCH = 200
"""Changes sent to one browser in one SSE message at most."""
T = TypeVar("T")


class RenderCache(Generic[T]):
    """Rendered fragments (or encoded events) by (template, revision, type as seen):
    rendered once, sent to every browser."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int, str], T] = OrderedDict()

    def get(self, name: str, change: ChangeRecord, render: Callable[[ChangeRecord], T]) -> T:
        key = (name, change.revision, change.type)
        html = self._items.get(key)
        if html is None:
            html = self._items[key] = render(change)
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return html


async def change_fragments(
    hub: HubService,
    query: ResourceQuery,
    since: int,
    render: Callable[[ChangeRecord], str],
    *,
    event: str,
    stale: str,
) -> AsyncIterator[ServerSentEvent]:
    """Every matching change after `since` as a rendered fragment, replayed then live; the
    `stale` fragment once if `since` is older than the retained change log."""

    def accepts(item: FeedItem) -> bool:
        return isinstance(item, ChangeRecord) and query.matches(item)

    with hub.feed.subscribe(accepts, cluster=query.cluster) as sub:
        last = since
        # A page rendered moments ago is usually current: everything after it will reach the
        # subscription made above, so skip the database (200 browsers reconnecting at once
        # would otherwise each run three queries).
        up_to_date = 0 < hub.feed.latest_revision <= since
        if not up_to_date:
            oldest = await queries.oldest_retained_revision(hub.engine)
            current = await queries.current_revision(hub.engine)
            if since < current and (oldest is None or since < oldest - 1):
                yield ServerSentEvent(data=stale, event=event)
                return
        while not up_to_date:
            page = await queries.changes_after(hub.engine, last, query)
            for change in page.changes:
                yield ServerSentEvent(data=render(change), event=event, id=str(change.revision))
            last = page.last_revision
            if page.caught_up:
                break
        while not sub.overflowed:
            # everything already waiting goes out as one message: under load the cost per
            # send (the server's, the socket's), not per change, dominates
            items = await sub.take(MAX_BATCH)
            fresh = [
                seen
                for i in items
                if isinstance(i, ChangeRecord)
                and i.revision > last
                and (seen := query.seen_as(i)) is not None
            ]
            if fresh:
                last = fresh[-1].revision
                yield ServerSentEvent(
                    data="\n".join(render(c) for c in fresh), event=event, id=str(last)
                )
        if sub.overflowed:
            yield ServerSentEvent(data=stale, event=event)


class Signal:
    """A counter that waiters can wait to change: 'something about workloads changed', and
    per workload, the version at which it last changed. Browsers re-render on it at most
    every `min_interval_s`."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()
        self._changed: dict[str, int] = {}

    def bump(self, names: Iterable[str] = ()) -> None:
        self.version += 1
        for name in names:
            self._changed[name] = self.version
        self._event.set()
        self._event = asyncio.Event()

    def version_of(self, name: str) -> int:
        """The version at which workload `name` last changed (0: not since the start)."""
        return self._changed.get(name, 0)

    async def wait_past(self, version: int) -> int:
        while self.version <= version:
            await self._event.wait()
        return self.version


async def rerendered(
    signal: Signal,
    render: Callable[[], Awaitable[str]],
    *,
    event: str,
    min_interval_s: float = 0.5,
    version: Callable[[], int] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """The fragment `render` makes, now and again after every change that moves `version`
    (the signal's own by default), at most every `min_interval_s`."""
    current = version or (lambda: signal.version)
    seen = current()
    yield ServerSentEvent(data=await render(), event=event)
    while True:
        await signal.wait_past(signal.version)
        if current() == seen:
            continue
        await asyncio.sleep(min_interval_s)
        seen = current()
        yield ServerSentEvent(data=await render(), event=event)


class SharedRenders:
    """Fragments rendered once per (view, version) and shared by every browser that shows
    that view: after a change, N browsers on one view cost one query and one render. The
    first asker renders while the others wait for it (one lock per view); a failed render
    is simply tried by the next. At most `size` views are kept."""

    def __init__(self, size: int = 256) -> None:
        self._done: Lru[Hashable, tuple[int, str]] = Lru(size)
        self._locks: Lru[Hashable, asyncio.Lock] = Lru(size)

    async def get(self, key: Hashable, version: int, render: Callable[[], Awaitable[str]]) -> str:
        lock = self._locks.get(key) or self._locks.put(key, asyncio.Lock())
        async with lock:
            found = self._done.get(key)
            if found is not None and found[0] == version:
                return found[1]
            html = await render()
            self._done.put(key, (version, html))
            return html
