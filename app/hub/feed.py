"""The change feed: one in-process fan-out of committed changes to every SSE client.

The writer publishes after commit, so nothing is streamed that is not stored. Each
subscriber has a bounded queue; a subscriber that falls behind is marked `overflowed` and
stops receiving, instead of slowing the others or growing without bound. Its stream then
ends and the client resumes from its Last-Event-ID out of the change log.

Observers (`observe`) are told of every published batch, synchronously and before any
subscriber: for tallies that need no queue (the dashboard's fleet pulse counts changes per
cluster this way). They must be quick and must not raise.

The feed also knows every cluster's labels as of the changes it publishes (`labels`): a
batch's hellos update them before its changes go out, so a stream scoped to clusters by
label (`ClusterScope`) judges each change by its cluster's labels at that point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from app.store.records import ChangeRecord, ClusterStatus

FeedItem = ChangeRecord | ClusterStatus


@dataclass(eq=False)
class Subscription:
    accepts: Callable[[FeedItem], bool]
    queue: asyncio.Queue[FeedItem] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False


class ChangeFeed:
    def __init__(self, queue_size: int = 10_000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscription] = set()
        self._observers: list[Callable[[Sequence[FeedItem]], None]] = []
        self.latest_revision = 0
        self.labels: dict[str, dict[str, str]] = {}
        """Cluster name -> labels (loaded at start, then updated by each hello)."""

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @contextmanager
    def subscribe(self, accepts: Callable[[FeedItem], bool]) -> Iterator[Subscription]:
        sub = Subscription(accepts, asyncio.Queue(maxsize=self.queue_size))
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

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
        for sub in list(self._subscribers):
            if sub.overflowed:
                continue
            for item in items:
                if not sub.accepts(item):
                    continue
                try:
                    sub.queue.put_nowait(item)
                except asyncio.QueueFull:
                    sub.overflowed = True
                    self._subscribers.discard(sub)
                    break
