"""`FleetPulse`: the fleet overview's live side, one per hub process, shared by every browser.

- It observes the change feed (no queue): changes per cluster make the change rates, and a
  cluster going on- or offline asks for a fresh read.
- It reads every cluster from the database (`store.fleet.fleet_state`, three statements
  whatever the fleet's size) every `reread_s` while an overview is open, at the next tick
  after a cluster went on- or offline, and for a page rendered after changes were committed
  (at most once a second): once for all browsers. Concurrent callers share one read.
- Every `period_s` it computes each distinct view that open overviews show once
  (`FleetModel.page`), encodes it once, and hands that JSON to every browser showing the
  view: a browser receives its page of rows and its summary, never the fleet.
- A browser whose queue is full skips a tick: the next one supersedes it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager

import orjson
from sse_starlette import ServerSentEvent

from app.hub.feed import FeedItem
from app.hub.service import HubService
from app.store.fleet import fleet_state
from app.store.records import ChangeRecord, ClusterStatus
from app.web.fleet import FleetModel, FleetPage, FleetView, Live

log = logging.getLogger(__name__)

REFUSED_WINDOW_S = 600.0
"""A cluster counts as refusing while the hub refused something of it in this window."""
PAGE_READ_AFTER_S = 1.0
"""A page rendered after changes were committed re-reads the fleet if the last read is
older than this: pages show the fleet at most this much behind."""


class FleetPulse:
    def __init__(
        self,
        hub: HubService,
        *,
        group_labels: Sequence[str] = ("env", "region"),
        period_s: float = 1.0,
        reread_s: float = 5.0,
    ) -> None:
        self._hub = hub
        self._period_s = period_s
        self._reread_s = reread_s
        self.model = FleetModel(group_labels)
        self._views: dict[FleetView, set[asyncio.Queue[str]]] = {}
        self._tally: Counter[str] = Counter()
        self._rates: dict[str, float] = {}
        """Changes per second of each cluster that changed in the last period."""
        self._status_changed = False
        self._committed = 0
        """Feed batches seen; `_read_mark` is its value when the last read started."""
        self._read_mark = -1
        self._read_at = -math.inf
        self._reading = asyncio.Lock()
        self.reads = 0
        self.publish_s = 0.0
        """Seconds spent computing and encoding views, for the benchmark."""

    @property
    def clients(self) -> int:
        return sum(len(q) for q in self._views.values())

    @property
    def views(self) -> int:
        return len(self._views)

    @contextmanager
    def subscribe(self, view: FleetView) -> Iterator[asyncio.Queue[str]]:
        """A queue of this view's encoded pages, one a tick."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=2)
        self._views.setdefault(view, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._views.get(view)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._views[view]

    def _observe(self, items: Sequence[FeedItem]) -> None:
        self._committed += 1
        for item in items:
            if isinstance(item, ChangeRecord):
                self._tally[item.cluster] += 1
            elif isinstance(item, ClusterStatus):
                self._status_changed = True

    async def page(self, view: FleetView) -> FleetPage:
        """The view as a page renders it: from a read made after the last committed change
        (or at most `PAGE_READ_AFTER_S` before)."""
        loop = asyncio.get_running_loop()
        never_read = self._read_mark < 0
        stale = self._committed != self._read_mark
        if never_read or (stale and loop.time() - self._read_at >= PAGE_READ_AFTER_S):
            await self._read(since=self._read_at)
        self.model.set_live(self._live())
        return self.model.page(view)

    def _live(self) -> Live:
        return Live(
            self._rates, frozenset(self._hub.over_quota()), frozenset(self._hub.ingest.unsynced())
        )

    async def _read(self, *, since: float) -> None:
        """Read every cluster, unless a read started after `since` finished meanwhile."""
        async with self._reading:
            if self._read_at > since:
                return
            loop = asyncio.get_running_loop()
            mark, started = self._committed, loop.time()
            try:
                states = await fleet_state(
                    self._hub.engine, refused_since=time.time() - REFUSED_WINDOW_S
                )
            except Exception as exc:  # the database is away: keep the last read
                log.warning("fleet overview: could not read the clusters (%s)", exc)
                return
            self.model.replace(states)
            self._read_mark, self._read_at = mark, started
            self.reads += 1

    async def run(self) -> None:
        """Until cancelled: every period (on a fixed schedule, so the work of a period does
        not stretch it), send each open view its page."""
        loop = asyncio.get_running_loop()
        tick = loop.time()
        with self._hub.feed.observe(self._observe):
            while True:
                tick += self._period_s
                await asyncio.sleep(max(0.0, tick - loop.time()))
                tally, self._tally = self._tally, Counter()
                self._rates = {c: n / self._period_s for c, n in tally.items()}
                if not self._views:
                    continue
                due = loop.time() - self._read_at >= self._reread_s
                if self._status_changed or due:
                    self._status_changed = False
                    await self._read(since=self._read_at)
                self.model.set_live(self._live())
                self._publish()

    def _publish(self) -> None:
        started = time.perf_counter()
        now = time.time()
        for view, queues in list(self._views.items()):
            encoded = orjson.dumps(self.model.page(view).json(now)).decode()
            for queue in list(queues):
                if not queue.full():
                    queue.put_nowait(encoded)
        self.publish_s += time.perf_counter() - started


async def fleet_events(pulse: FleetPulse, view: FleetView) -> AsyncIterator[ServerSentEvent]:
    """The view's page now, then every tick (event `pulse`, JSON: `FleetPage.json`)."""
    with pulse.subscribe(view) as queue:
        first = await pulse.page(view)
        yield ServerSentEvent(data=orjson.dumps(first.json(time.time())).decode(), event="pulse")
        while True:
            yield ServerSentEvent(data=await queue.get(), event="pulse")
