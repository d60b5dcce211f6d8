"""The change feed: one in-process fan-out of committed changes to every SSE client.

The writer publishes after commit, so nothing is streamed that is not stored. Each
subscriber has a bounded buffer, filled a whole published batch at a time (one wake-up per
batch, not one queue operation per item: what 1,000 streams need); a subscriber that falls
behind (a batch would pass its bound) is marked `overflowed` and stops receiving, instead
of slowing the others or growing without bound. Its stream then ends and the client
resumes from its Last-Event-ID out of the change log.

Observers (`observe`) are told of every published batch, synchronously and before any
subscriber: for tallies that need no queue (the dashboard's fleet pulse counts changes per
cluster this way). They must be quick and must not raise.

The feed also knows every cluster's labels as of the changes it publishes (`labels`): a
batch's hellos update them before its changes go out, so a stream scoped to clusters by
label (`ClusterScope`) judges each change by its cluster's labels at that point.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from app.store.records import ChangeRecord, ClusterStatus

FeedItem = ChangeRecord | ClusterStatus


class Subscription:
    """One subscriber's bounded buffer of the items it accepted, in publish order.

    A batch is appended at once and wakes the subscriber once (with 1,000 streams, one
    queue operation per item and stream was a large part of the hub's time). `accepts`
    None accepts everything without a call per item."""

    def __init__(self, accepts: Callable[[FeedItem], bool] | None, size: int) -> None:
        self.accepts = accepts
        self.size = size
        self.overflowed = False
        self._items: deque[FeedItem] = deque()
        self._ready = asyncio.Event()

    def offer(self, items: Sequence[FeedItem]) -> bool:
        """Append what this subscriber accepts of `items`; False (and `overflowed`) when
        that would pass its bound."""
        accepts = self.accepts
        taken = items if accepts is None else [i for i in items if accepts(i)]
        if not taken:
            return True
        if len(self._items) + len(taken) > self.size:
            self.overflowed = True
            self._ready.set()
            return False
        self._items.extend(taken)
        self._ready.set()
        return True

    async def take(self, most: int) -> list[FeedItem]:
        """The oldest items, at most `most`, once there is one; [] once overflowed and
        drained."""
        while not self._items:
            if self.overflowed:
                return []
            self._ready.clear()
            await self._ready.wait()
        items = self._items
        if len(items) <= most:  # the usual case: everything, copied at C speed
            taken = list(items)
            items.clear()
            return taken
        return [items.popleft() for _ in range(most)]


class ChangeFeed:
    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._by_cluster: dict[str, set[Subscription]] = {}
        """Subscriptions to one cluster's items, which see no other cluster's."""
        self._observers: list[Callable[[Sequence[FeedItem]], None]] = []
        self.latest_revision = 0
        self.labels: dict[str, dict[str, str]] = {}
        """Cluster name -> labels (loaded at start, then updated by each hello)."""

    @property
    def subscribers(self) -> int:
        return len(self._subscribers) + sum(len(s) for s in self._by_cluster.values())

    @contextmanager
    def subscribe(
        self, accepts: Callable[[FeedItem], bool] | None, *, cluster: str | None = None
    ) -> Iterator[Subscription]:
        """A subscription to what `accepts` accepts (None: everything) until the block ends;
        with `cluster`, of that cluster's items only, which `accepts` alone then sees (1,000
        streams of one cluster each cost one check per change, not 1,000)."""
        sub = Subscription(accepts, self.queue_size)
        group = (
            self._subscribers if cluster is None else self._by_cluster.setdefault(cluster, set())
        )
        group.add(sub)
        try:
            yield sub
        finally:
            group.discard(sub)
            if cluster is not None and not group:
                self._by_cluster.pop(cluster, None)

    @contextmanager
    def observe(self, observer: Callable[[Sequence[FeedItem]], None]) -> Iterator[None]:
        """Call `observer` with every batch published while the context is open."""
        self._observers.append(observer)
        try:
            yield
        finally:
            self._observers.remove(observer)

    def publish(
        self, items: Sequence[FeedItem], labels: dict[str, dict[str, str]] | None = None
    ) -> None:
        if labels:
            self.labels.update(labels)
        for observer in list(self._observers):
            observer(items)
        for item in items:
            if isinstance(item, ChangeRecord):
                self.latest_revision = max(self.latest_revision, item.revision)
        self._offer(self._subscribers, items)
        if self._by_cluster:
            per_cluster: dict[str, list[FeedItem]] = {}
            for item in items:
                name = item.cluster if isinstance(item, ChangeRecord) else item.name
                if name in self._by_cluster:
                    per_cluster.setdefault(name, []).append(item)
            for name, theirs in per_cluster.items():
                self._offer(self._by_cluster[name], theirs)

    @staticmethod
    def _offer(subscribers: set[Subscription], items: Sequence[FeedItem]) -> None:
        for sub in list(subscribers):
            if not sub.offer(items):
                subscribers.discard(sub)
