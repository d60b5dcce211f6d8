"""Ingest: MQTT messages from agents -> reflectors -> one SQL transaction per batch.

- `handle` is gmqtt's message callback. It checks the message (topic, envelope, payload),
  queues it in arrival order and returns only after the batch holding it is committed, so the
  broker's PUBACK means "stored" (ack after commit). A rejected message is logged, counted
  and acknowledged: redelivering it could not make it valid.
- `run` drains the queue in batches (many messages, one transaction), then fans the committed
  changes out to the feed, renews the registry's claims, and asks agents to relist kinds
  whose snapshot broke or whose digest differs.
- Messages of one cluster are applied in the order they arrived. The queue is bounded by the
  broker: with manual acks it sends at most `receive_maximum` unacknowledged messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.hub.feed import ChangeFeed
from app.hub.registry import ClusterRegistry
from app.informer.deltas import ClusterHello, ClusterOffline, ClusterSeen, Delta
from app.informer.objects import KindKey
from app.informer.reflector import Reflection, Reflector
from app.store.records import Applied
from app.store.writer import InventoryWriter
from app.transport import cloudevents, topics
from app.transport.messages import (
    AgentMessage,
    Digest,
    Heartbeat,
    Hello,
    Offline,
    SnapshotChunk,
    WatchEvents,
    WorkloadResync,
    WorkloadStatus,
    parse_agent_message,
)

log = logging.getLogger(__name__)

SLOW_BATCH_S = 0.1
T = TypeVar("T")
WorkloadMessages = Callable[[list[tuple[str, AgentMessage]]], Awaitable[None]]
"""Receives workload status and resync messages, in order, before they are acknowledged."""
RequestResync = Callable[[str, tuple[KindKey, ...]], Awaitable[None]]


@dataclass
class _Pending:
    cluster: str
    message: AgentMessage
    done: asyncio.Future[None]


@dataclass
class IngestStats:
    messages: int = 0
    events: int = 0
    batches: int = 0
    changes: int = 0
    relists: int = 0
    """Resync requests sent to agents (a broken snapshot or a digest that differed)."""
    rejected: Counter[str] = field(default_factory=Counter)


class Ingest:
    def __init__(
        self,
        *,
        source: str,
        writer: InventoryWriter,
        feed: ChangeFeed,
        registry: ClusterRegistry,
        request_resync: RequestResync,
        batch_max_events: int = 5000,
        lease_heartbeats: float = 3.0,
        on_workload_messages: WorkloadMessages | None = None,
    ) -> None:
        self._on_workload_messages = on_workload_messages
        self._source = source
        self._writer = writer
        self._feed = feed
        self._registry = registry
        self._request_resync = request_resync
        self._batch_max_events = batch_max_events
        self._lease_heartbeats = lease_heartbeats
        self._queue: deque[_Pending] = deque()
        self._ready = asyncio.Event()
        self._reflectors: dict[str, Reflector] = {}
        self._heartbeat_s: dict[str, float] = {}
        self._instances: dict[str, str] = {}
        self.stats = IngestStats()
        self._last_logged: dict[str, float] = {}

    @property
    def queued(self) -> int:
        return len(self._queue)

    def reject(self, reason: str, topic: str, detail: str) -> None:
        """Count a rejected message; log it, at most once a second per reason (a flood of
        bad messages must not flood the log too)."""
        self.stats.rejected[reason] += 1
        now = time.monotonic()
        if now - self._last_logged.get(reason, -1.0) >= 1.0:
            self._last_logged[reason] = now
            log.warning(
                "rejected message on %s (%s, %d so far): %s",
                topic,
                reason,
                self.stats.rejected[reason],
                detail,
            )

    def _check(self, topic: str, payload: bytes) -> tuple[str, AgentMessage] | None:
        try:
            cluster = topics.cluster_of(topic, self._source)
        except ValueError as exc:
            self.reject("topic", topic, str(exc))
            return None
        try:
            envelope = cloudevents.decode(payload)
            if envelope.cluster != cluster:
                self.reject(
                    "cluster_mismatch",
                    topic,
                    f"message names cluster {envelope.cluster!r}, topic {cluster!r}",
                )
                return None
            return cluster, parse_agent_message(envelope)
        except cloudevents.MalformedMessage as exc:
            self.reject(exc.reason, topic, str(exc))
            return None

    async def handle(self, topic: str, payload: bytes) -> None:
        checked = self._check(topic, payload)
        if checked is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(*checked, done))  # no await before this: arrival order
        self._ready.set()
        await done

    def _reflect(self, pending: _Pending) -> Reflection:
        cluster, message = pending.cluster, pending.message
        reflector = self._reflectors.get(cluster)
        if reflector is None:
            reflector = self._reflectors[cluster] = Reflector(cluster)
        match message:
            case WatchEvents(events):
                self.stats.events += len(events)
                return reflector.watch(events)
            case SnapshotChunk():
                self.stats.events += len(message.items)
                return reflector.snapshot_chunk(
                    snapshot_id=message.snapshot_id,
                    kind=message.kind,
                    chunk=message.chunk,
                    last=message.last,
                    resource_version=message.resource_version,
                    items=message.items,
                )
            case Digest(digests):
                return reflector.digest(digests)
            case Heartbeat():
                return Reflection([ClusterSeen(cluster)])
            case Hello():
                if self._instances.get(cluster) != message.instance:
                    # a restarted agent: snapshots it had under way will never finish
                    self._reflectors[cluster] = Reflector(cluster)
                    self._instances[cluster] = message.instance
                self._heartbeat_s[cluster] = message.heartbeat_s
                return Reflection(
                    [
                        ClusterHello(
                            cluster,
                            message.labels,
                            message.kinds,
                            message.heartbeat_s,
                            message.agent_version,
                        )
                    ]
                )
            case Offline(reason):
                return Reflection([ClusterOffline(cluster, reason)])
            case WorkloadStatus() | WorkloadResync():
                return Reflection()  # handed to the workload dispatcher after the commit
        raise AssertionError(message)  # pragma: no cover

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        events = 0
        while self._queue and events < self._batch_max_events:
            item = self._queue.popleft()
            batch.append(item)
            msg = item.message
            events += (
                len(msg.events)
                if isinstance(msg, WatchEvents)
                else (len(msg.items) if isinstance(msg, SnapshotChunk) else 1)
            )
        if not self._queue:
            self._ready.clear()
        return batch

    async def run(self) -> None:
        """Apply batches until cancelled; a failing database is retried, never skipped."""
        while True:
            await self._ready.wait()
            batch = self._take_batch()
            deltas: list[Delta] = []
            relist: dict[str, set[KindKey]] = {}
            for pending in batch:
                reflection = self._reflect(pending)
                deltas.extend(reflection.deltas)
                if reflection.relist:
                    relist.setdefault(pending.cluster, set()).update(reflection.relist)
            started = time.monotonic()
            applied = await self._apply_with_retry(deltas)
            took = time.monotonic() - started
            if took > SLOW_BATCH_S:
                log.warning(
                    "slow batch: %d messages, %d changes committed in %.0f ms (%s)",
                    len(batch),
                    len(applied.changes),
                    took * 1000,
                    ", ".join(
                        f"{n} {k}" for k, n in Counter(type(d).__name__ for d in deltas).items()
                    ),
                )
            await self._hand_over_workload_messages(batch)
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_result(None)
            self.stats.messages += len(batch)
            self.stats.batches += 1
            self.stats.changes += len(applied.changes)
            self._feed.publish([*applied.changes, *applied.clusters])
            for cluster, kinds in applied.resync.items():
                if kinds:
                    relist.setdefault(cluster, set()).update(kinds)
                else:
                    relist[cluster] = set()  # everything, hello included
            await self._after_commit(batch, relist)

    async def _hand_over_workload_messages(self, batch: list[_Pending]) -> None:
        handler = self._on_workload_messages
        messages: list[tuple[str, AgentMessage]] = [
            (p.cluster, p.message)
            for p in batch
            if isinstance(p.message, WorkloadStatus | WorkloadResync)
        ]
        if messages and handler is not None:
            await self._retry(lambda: handler(messages))

    async def _apply_with_retry(self, deltas: list[Delta]) -> Applied:
        return await self._retry(lambda: self._writer.apply(deltas))

    async def _retry(self, write: Callable[[], Awaitable[T]]) -> T:
        delay = 0.1
        while True:
            try:
                return await write()
            except Exception:
                log.exception("writing a batch failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _after_commit(self, batch: list[_Pending], relist: dict[str, set[KindKey]]) -> None:
        alive = {p.cluster for p in batch if isinstance(p.message, Heartbeat | Hello)}
        gone = {p.cluster for p in batch if isinstance(p.message, Offline)} - alive
        try:
            if alive:
                lease = max(self._heartbeat_s.get(c, 10.0) for c in alive)
                await self._registry.claim(alive, lease * self._lease_heartbeats)
            if gone:
                await self._registry.release(gone)
        except Exception as exc:  # the registry is advisory; ingest goes on without it
            log.warning("cluster registry unavailable: %s", exc)
        for cluster, kinds in relist.items():
            self.stats.relists += 1
            await self._request_resync(cluster, tuple(sorted(kinds, key=str)))
