"""Live parts of the dashboard: the fleet pulse and the HTML-fragment streams.

- `FleetPulse` is the overview's one subscription to the change feed per process: it counts
  changes per cluster and once a second hands every overview client the same small summary
  (cluster state and counts are re-read from the database every few seconds, once for all
  clients). A client whose queue is full skips a summary; the next one supersedes it.
- `/ui/stream/rows` and `/ui/stream/events` send rendered HTML: table rows as htmx
  out-of-band swaps, feed items for `sse-swap`. Each change is rendered once per process
  (`RenderCache`), however many browsers show it; changes waiting for a browser go out
  together in one message. They replay from the revision the page was
  rendered at, so a reconnect (the htmx extension reconnects without Last-Event-ID) loses
  nothing; a revision no longer in the log gets a "reload" notice instead.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sse_starlette import ServerSentEvent

from app.hub.feed import FeedItem
from app.hub.service import HubService
from app.store import queries
from app.store.queries import ResourceQuery
from app.store.records import ChangeRecord

Summary = dict[str, Any]
MAX_BATCH = 200
"""Changes sent to one browser in one SSE message at most."""


class FleetPulse:
    def __init__(self, hub: HubService, *, period_s: float = 1.0, reread_s: float = 5.0) -> None:
        self._hub = hub
        self._period_s = period_s
        self._reread_s = reread_s
        self._clients: set[asyncio.Queue[tuple[Summary, str]]] = set()
        self._rates: dict[str, float] = {}
        self._clusters: list[dict[str, Any]] = []
        self.latest: Summary = {"clusters": {}, "totals": {}}

    @property
    def clients(self) -> int:
        return len(self._clients)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[tuple[Summary, str]]]:
        queue: asyncio.Queue[tuple[Summary, str]] = asyncio.Queue(maxsize=4)
        self._clients.add(queue)
        try:
            yield queue
        finally:
            self._clients.discard(queue)

    async def run(self) -> None:
        """Until cancelled: tally the feed, publish a summary every period (on a fixed
        schedule, so the work of each period does not stretch it)."""
        loop = asyncio.get_running_loop()
        next_reread = 0.0
        tick = loop.time()
        while True:
            with self._hub.feed.subscribe(lambda _item: True) as sub:
                while not sub.overflowed:
                    tick += self._period_s
                    await asyncio.sleep(max(0.0, tick - loop.time()))
                    tally: Counter[str] = Counter()
                    status_changed = False
                    while not sub.queue.empty():
                        item = sub.queue.get_nowait()
                        if isinstance(item, ChangeRecord):
                            tally[item.cluster] += 1
                        else:
                            status_changed = True
                    if status_changed or loop.time() >= next_reread:
                        self._clusters = await self._read_clusters()
                        next_reread = loop.time() + self._reread_s
                    self._rates = {c: n / self._period_s for c, n in tally.items()}
                    self._publish()

    async def _read_clusters(self) -> list[dict[str, Any]]:
        try:
            return await queries.cluster_rows(self._hub.engine)
        except Exception:  # the database is away: keep the last view
            return self._clusters

    def _publish(self) -> None:
        throttled = self._hub.over_quota()
        clusters = {
            row["name"]: {
                "online": row["online"],
                "overQuota": row["name"] in throttled,
                "lastSeen": row["last_seen"],
                "counts": row["counts"],
                "objects": sum(row["counts"].values()),
                "rate": self._rates.get(row["name"], 0.0),
            }
            for row in self._clusters
        }
        self.latest = {
            "clusters": clusters,
            "totals": {
                "clusters": len(clusters),
                "online": sum(1 for c in clusters.values() if c["online"]),
                "objects": sum(c["objects"] for c in clusters.values()),
                "rate": sum(self._rates.values()),
            },
            "now": time.time(),
        }
        encoded = orjson.dumps(self.latest).decode()  # once, for every unscoped client
        for queue in list(self._clients):
            if not queue.full():
                queue.put_nowait((self.latest, encoded))


def scoped_summary(summary: Summary, visible: Callable[[str], bool]) -> Summary:
    """The summary of the clusters `visible` admits, totals recounted over them."""
    clusters = {n: c for n, c in summary.get("clusters", {}).items() if visible(n)}
    return {
        **summary,
        "clusters": clusters,
        "totals": {
            "clusters": len(clusters),
            "online": sum(1 for c in clusters.values() if c["online"]),
            "objects": sum(c["objects"] for c in clusters.values()),
            "rate": sum(c["rate"] for c in clusters.values()),
        },
    }


async def pulse_events(
    pulse: FleetPulse, visible: Callable[[str], bool] | None = None
) -> AsyncIterator[ServerSentEvent]:
    """The pulse, every period; only the clusters `visible` admits (None: all)."""

    def encoded(summary: Summary, shared: str | None = None) -> str:
        if visible is None:
            return shared or orjson.dumps(summary).decode()
        return orjson.dumps(scoped_summary(summary, visible)).decode()

    with pulse.subscribe() as queue:
        yield ServerSentEvent(data=encoded(pulse.latest), event="pulse")
        while True:
            summary, shared = await queue.get()
            yield ServerSentEvent(data=encoded(summary, shared), event="pulse")


class RenderCache:
    """Rendered fragments by (template, revision, type as seen): rendered once, sent to every
    browser."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, int, str], str] = OrderedDict()

    def get(self, name: str, change: ChangeRecord, render: Callable[[ChangeRecord], str]) -> str:
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

    with hub.feed.subscribe(accepts) as sub:
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
            items = [await sub.queue.get()]
            while not sub.queue.empty() and len(items) < MAX_BATCH:
                items.append(sub.queue.get_nowait())
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
    """A counter that waiters can wait to change: 'something about workloads changed'.
    Browsers re-render on it at most every `min_interval_s`."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait_past(self, version: int) -> int:
        while self.version <= version:
            await self._event.wait()
        return self.version


async def rerendered(
    signal: Signal, render: Callable[[], Any], *, event: str, min_interval_s: float = 0.5
) -> AsyncIterator[ServerSentEvent]:
    """The fragment `render` makes, now and again after every change (throttled)."""
    seen = signal.version
    yield ServerSentEvent(data=await render(), event=event)
    while True:
        seen = await signal.wait_past(seen)
        await asyncio.sleep(min_interval_s)
        seen = signal.version
        yield ServerSentEvent(data=await render(), event=event)
