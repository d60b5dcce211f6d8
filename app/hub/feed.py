"""The change feed: one in-process fan-out of committed changes to every SSE client.

The writer publishes after commit, so nothing is streamed that is not stored. Each
subscriber has a bounded queue; a subscriber that falls behind is marked `overflowed` and
stops receiving, instead of slowing the others or growing without bound. Its stream then
ends and the client resumes from its Last-Event-ID out of the change log.
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
        self.latest_revision = 0

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

    def publish(self, items: Sequence[FeedItem]) -> None:
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
