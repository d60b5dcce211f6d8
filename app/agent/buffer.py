"""The agent's memory of changes: what waits to be sent, and what the hub should hold.

`PendingChanges` conflates per object: while the broker is away, each object keeps only its
latest event, so the buffer is bounded by the number of objects in the cluster (and by
`limit`; past it the buffer is dropped and everything relisted on reconnect).

`SendPace` keeps the agent under the hub's per-cluster quota: the hub drops what a cluster
sends beyond it, so pacing here turns a burst into waiting (while changes keep conflating
into bigger, fewer messages) instead of into lost messages and a relist.

`PublishedIndex` is (namespace, name) -> (uid, resourceVersion) per kind for everything
handed to the transport, updated exactly as the hub updates its store. Its digests are what
the hub's store must match; a difference means a message was lost and that kind is relisted.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterator

from app.informer.digest import KindDigest, kind_digest
from app.informer.objects import EventType, KindKey, WatchEvent

ObjectName = tuple[str, str]


class PendingChanges:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.overflowed = False
        self._events: OrderedDict[tuple[KindKey, str, str], WatchEvent] = OrderedDict()

    def __len__(self) -> int:
        return len(self._events)

    def add(self, event: WatchEvent) -> None:
        ref = event.ref
        key = (KindKey(ref.api_version, ref.kind), ref.namespace, ref.name)
        current = self._events.get(key)
        if current is not None and current.ref.resource_version >= ref.resource_version:
            return
        self._events[key] = event
        if len(self._events) > self.limit:
            self._events.clear()
            self.overflowed = True

    def take(self) -> Iterator[WatchEvent]:
        """Pop events oldest first; stop iterating to leave the rest."""
        while self._events:
            yield self._events.popitem(last=False)[1]

    def put_back(self, event: WatchEvent) -> None:
        """Return one taken-but-unsent event to the front (it did not fit a message)."""
        ref = event.ref
        key = (KindKey(ref.api_version, ref.kind), ref.namespace, ref.name)
        if key not in self._events:
            self._events[key] = event
            self._events.move_to_end(key, last=False)

    def drop_listed(self, kind: KindKey, resource_version: int) -> None:
        """A fresh listing of `kind` at `resource_version` supersedes older pending events."""
        stale = [
            k
            for k, e in self._events.items()
            if k[0] == kind and e.ref.resource_version <= resource_version
        ]
        for key in stale:
            del self._events[key]

    def take_kind(self, kind: KindKey) -> list[WatchEvent]:
        """Remove and return the events of one kind, oldest first."""
        keys = [k for k in self._events if k[0] == kind]
        return [self._events.pop(k) for k in keys]

    def clear(self) -> None:
        self._events.clear()
        self.overflowed = False


class PublishedIndex:
    def __init__(self) -> None:
        self._kinds: dict[KindKey, dict[ObjectName, tuple[str, int]]] = {}

    def record(self, event: WatchEvent) -> None:
        ref = event.ref
        objects = self._kinds.setdefault(KindKey(ref.api_version, ref.kind), {})
        name = (ref.namespace, ref.name)
        current = objects.get(name)
        if current is not None and current[1] >= ref.resource_version:
            return
        if event.type is EventType.DELETED:
            objects.pop(name, None)
        else:
            objects[name] = (ref.uid, ref.resource_version)

    def replace(self, kind: KindKey, items: list[WatchEvent]) -> None:
        """Mirror the hub's replacing snapshot: the kind holds exactly the listing's items
        (events newer than it are held back until its chunks are queued, and recorded as
        they are sent)."""
        self._kinds[kind] = {
            (e.ref.namespace, e.ref.name): (e.ref.uid, e.ref.resource_version) for e in items
        }

    def digests(self, kinds: tuple[KindKey, ...]) -> dict[KindKey, KindDigest]:
        return {k: kind_digest(self._kinds.get(k, {}).values()) for k in kinds}


class SendPace:
    """Token buckets (one second of burst) on messages and bytes sent."""

    def __init__(self, messages_per_s: float, bytes_per_s: float) -> None:
        self.messages_per_s = messages_per_s
        self.bytes_per_s = bytes_per_s
        self._messages = messages_per_s
        self._bytes = bytes_per_s
        self._at = time.monotonic()
        self.waited_s = 0.0

    async def wait(self, size: int) -> None:
        """Return once a message of `size` bytes may go (a message larger than a second's
        bytes waits for a full bucket, then goes)."""
        while True:
            now = time.monotonic()
            elapsed, self._at = now - self._at, now
            self._messages = min(
                self.messages_per_s, self._messages + elapsed * self.messages_per_s
            )
            self._bytes = min(self.bytes_per_s, self._bytes + elapsed * self.bytes_per_s)
            need = min(float(size), self.bytes_per_s)
            if self._messages >= 1.0 and self._bytes >= need:
                self._messages -= 1.0
                self._bytes -= size
                return
            delay = max(
                (1.0 - self._messages) / self.messages_per_s,
                (need - self._bytes) / self.bytes_per_s,
            )
            self.waited_s += delay
            await asyncio.sleep(delay)
