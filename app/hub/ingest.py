"""Ingest: MQTT messages from agents -> reflectors -> one SQL transaction per batch.

- `handle` is gmqtt's message callback. A message from a cluster that is not registered
  (`registrations.py`) is refused before anything else, unparsed (`unregistered`). Otherwise
  it admits the message against its cluster's quota
  (`quota.py`: over quota -> dropped before parsing), checks it (`admission.py`: topic,
  envelope, payload, each object; refusals counted, recorded and acknowledged by
  `refusals.py`) and queues it on its cluster's queue, then returns only after the batch
  holding it is committed, so the broker's PUBACK means "stored" (ack after commit).
- `run` takes batches round-robin over the clusters with queued messages, so one busy
  cluster cannot push the others to the back (while only heartbeats wait, it lingers up to
  `heartbeat_linger_s` for more, so a large fleet's heartbeats share transactions); reflects
  them; and commits them through
  `isolation.py`: an unavailable database is waited out (nothing acknowledged, nothing lost),
  data the database will never take is isolated down to one object and refused
  (`unstorable`) while the rest commits.
- After a commit it fans the changes out to the feed, renews the registry's claims, and
  asks agents to relist what needs it, through `RelistLimiter`.

Messages of one cluster are applied in the order they arrived. The queues are bounded
here, not by the broker (mosquitto 2.0.11 does not keep to the hub's receive-maximum): past
`max_queued_messages` or `max_queued_bytes` the hub stops reading from the broker until half
of it is applied (`backpressure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from app.hub.admission import Admission
from app.hub.dead_letters import DeadLetters
from app.hub.feed import ChangeFeed
from app.hub.isolation import IngestHealth, Isolator
from app.hub.quota import ClusterQuota, OverQuota
from app.hub.refusals import Refusals
from app.hub.registrations import AdmitAll, RegistrationGate
from app.hub.registry import ClusterRegistry
from app.hub.relists import EVERYTHING, RelistLimiter
from app.informer.deltas import ClusterHello, ClusterOffline, ClusterSeen, Delta, Sweep, Upsert
from app.informer.objects import KindKey
from app.informer.reflector import Reflection, Reflector
from app.store.errors import is_data_error
from app.store.records import Applied
from app.store.writer import InventoryWriter
from app.transport import topics
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
    message_type,
)

log = logging.getLogger(__name__)

SLOW_BATCH_S = 0.1
RELIST_WAIT_S = 60.0
"""How long a cluster counts as waited for after the hub asked it to relist (an agent that
never answers is asked again by its next digest, not waited for forever)."""
T = TypeVar("T")
U = TypeVar("U")
WorkloadMessages = Callable[[list[tuple[str, AgentMessage]]], Awaitable[None]]
"""Receives workload status and resync messages, in order, before they are acknowledged."""
RequestResync = Callable[[str, tuple[KindKey, ...]], Awaitable[None]]


@dataclass(eq=False)
class _Pending:
    cluster: str
    topic: str
    type: str
    message: AgentMessage
    size: int
    enqueued: float
    done: asyncio.Future[None]
    deltas: list[Delta] = field(default_factory=list)

    @property
    def events(self) -> int:
        msg = self.message
        if isinstance(msg, WatchEvents):
            return len(msg.events)
        return len(msg.items) if isinstance(msg, SnapshotChunk) else 1


@dataclass(eq=False)
class _Part:
    """What isolation writes and splits: a message's deltas, or a slice of them."""

    pending: _Pending
    deltas: list[Delta]

    def halves(self) -> list[_Part] | None:
        if len(self.deltas) < 2:
            return None
        mid = len(self.deltas) // 2
        return [_Part(self.pending, self.deltas[:mid]), _Part(self.pending, self.deltas[mid:])]


@dataclass
class IngestStats:
    messages: int = 0
    events: int = 0
    batches: int = 0
    changes: int = 0
    relists: int = 0
    """Resync requests sent to agents."""
    rejected: Counter[str] = field(default_factory=Counter)
    """Refused messages and objects, by reason (`over_quota` included)."""


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
        heartbeat_linger_s: float = 0.0,
        lease_heartbeats: float = 3.0,
        on_workload_messages: WorkloadMessages | None = None,
        quota: ClusterQuota | None = None,
        relists: RelistLimiter | None = None,
        dead_letters: DeadLetters | None = None,
        max_queued_messages: int = 20_000,
        max_queued_bytes: int = 256 * 1024 * 1024,
        registrations: RegistrationGate | None = None,
    ) -> None:
        self._on_workload_messages = on_workload_messages
        self._source = source
        self._writer = writer
        self._feed = feed
        self._registry = registry
        self._request_resync = request_resync
        self._batch_max_events = batch_max_events
        self._linger_s = heartbeat_linger_s
        self._queued_heartbeats = 0
        self._first_queued: float | None = None
        """When the first message still waiting was queued (None: none waits)."""
        self._urgent = asyncio.Event()
        """Set when something other than a heartbeat waits: a lingering batch goes now."""
        self._lease_heartbeats = lease_heartbeats
        self.quota = quota or ClusterQuota()
        self.relists = relists or RelistLimiter()
        self.dead_letters = dead_letters or DeadLetters()
        self._queues: dict[str, deque[_Pending]] = {}
        self._turns: deque[str] = deque()
        """Clusters with queued messages, in the order they get their next turn."""
        self._queued = 0
        self._queued_bytes = 0
        self._max_queued = (max_queued_messages, max_queued_bytes)
        self.backpressure: Callable[[bool], None] = lambda _paused: None
        """Told True when the queue passes its bound (stop reading from the broker) and
        False once it is below half of it again."""
        self.paused = False
        self._writing: list[_Pending] = []
        """The batch being committed, oldest message first."""
        self._ready = asyncio.Event()
        self._reflectors: dict[str, Reflector] = {}
        self._heartbeat_s: dict[str, float] = {}
        self._relisting: dict[str, float] = {}
        """Cluster -> when (monotonic) the hub last asked it to relist, until a snapshot
        of it ends."""
        self._instances: dict[str, str] = {}
        self.stats = IngestStats()
        self.refusals = Refusals(self.dead_letters, self._ready.set)
        self.stats.rejected = self.refusals.counts
        self.registrations: RegistrationGate = registrations or AdmitAll()
        self.admission = Admission(self.refusals, self.registrations)
        self._jobs: deque[tuple[Callable[[], Awaitable[None]], asyncio.Future[None]]] = deque()
        """Work that must not overlap a batch (`exclusive`), run by the loop between two."""
        self.health = IngestHealth()
        self._isolator = Isolator(self.health)

    # -- state for readiness and metrics -------------------------------------------------

    @property
    def queued(self) -> int:
        """Messages received and not yet committed (waiting, or in the batch being written)."""
        return self._queued + len(self._writing)

    def oldest_queued_s(self) -> float:
        """Age of the oldest message received and not yet committed (0 when none)."""
        heads = [q[0].enqueued for q in self._queues.values() if q]
        heads += [self._writing[0].enqueued] if self._writing else []
        return time.monotonic() - min(heads) if heads else 0.0

    def stuck_for(self) -> float:
        """How long messages have waited with no commit (0 when ingest keeps up)."""
        if not self.queued:
            return 0.0
        return min(time.monotonic() - self.health.last_commit, self.oldest_queued_s())

    def unsynced(self) -> set[str]:
        """Clusters this hub waits for a listing from: a snapshot of theirs is arriving, or
        a relist asked for in the last `RELIST_WAIT_S` has not ended yet."""
        now = time.monotonic()
        for cluster, asked in list(self._relisting.items()):
            if now - asked > RELIST_WAIT_S:
                del self._relisting[cluster]
        receiving = {c for c, r in self._reflectors.items() if r.receiving}
        return receiving | self._relisting.keys()

    def announce(self, cluster: str, kinds: Iterable[KindKey]) -> None:
        """Known from before (the clusters table at start): its events are accepted."""
        self.admission.announce(cluster, kinds)

    # -- receiving -----------------------------------------------------------------------

    async def handle(self, topic: str, payload: bytes) -> None:
        try:
            cluster = topics.cluster_of(topic, self._source)
        except ValueError as exc:
            parts = topic.split("/")
            claimed = parts[3] if len(parts) > 3 else ""
            self.refusals.reject("topic", topic, str(exc), cluster=claimed, payload=payload)
            return
        if not self.registrations.admits(cluster):
            detail = f"cluster {cluster} is not registered (or was removed)"
            self.refusals.reject("unregistered", topic, detail, cluster=cluster, payload=payload)
            return
        if not self.quota.admit(cluster, len(payload)):
            self.stats.rejected["over_quota"] += 1
            return
        message = self.admission.check(cluster, topic, payload)
        if message is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = _Pending(
            cluster, topic, message_type(message), message, len(payload), time.monotonic(), done
        )
        queue = self._queues.get(cluster)  # no await before the append: arrival order
        if queue is None:
            queue = self._queues[cluster] = deque()
        if not queue:
            self._turns.append(cluster)
        queue.append(pending)
        self._queued += 1
        self._queued_bytes += pending.size
        if self._first_queued is None:
            self._first_queued = pending.enqueued
        if isinstance(message, Heartbeat):
            self._queued_heartbeats += 1
        if not isinstance(message, Heartbeat) or self._queued >= self._batch_max_events:
            self._urgent.set()
        if not self.paused and (
            self._queued >= self._max_queued[0] or self._queued_bytes >= self._max_queued[1]
        ):
            self.paused = True
            self.backpressure(True)
        self._ready.set()
        await done

    def forget(self, cluster: str) -> int:
        """A cluster was removed: refuse (and acknowledge) its queued messages, drop what
        ingest keeps about it; return how many were refused. Its messages in the batch being
        committed are committed: the removal's own work runs after it (`exclusive`)."""
        queue = self._queues.pop(cluster, deque())
        if cluster in self._turns:
            self._turns.remove(cluster)
        for pending in queue:
            self._queued -= 1
            self._queued_bytes -= pending.size
            self._queued_heartbeats -= isinstance(pending.message, Heartbeat)
            self.refusals.reject(
                "unregistered",
                pending.topic,
                f"cluster {cluster} was removed while this message waited",
                cluster=cluster,
                type_=pending.type,
                size=pending.size,
            )
            if not pending.done.done():
                pending.done.set_result(None)
        self._reflectors.pop(cluster, None)
        self._heartbeat_s.pop(cluster, None)
        self._relisting.pop(cluster, None)
        self._instances.pop(cluster, None)
        self.admission.forget(cluster)
        self._maybe_resume()
        return len(queue)

    async def exclusive(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` in the ingest loop between two batches (no batch is being written
        meanwhile), and return when it has run; its exception is raised here."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._jobs.append((job, done))
        self._ready.set()
        self._urgent.set()
        await done

    async def _run_jobs(self) -> None:
        while self._jobs:
            job, done = self._jobs.popleft()
            try:
                await job()
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(None)

    def _maybe_resume(self) -> None:
        if (
            self.paused
            and self._queued < self._max_queued[0] // 2
            and self._queued_bytes < self._max_queued[1] // 2
        ):
            self.paused = False
            self.backpressure(False)

    def _take_batch(self) -> list[_Pending]:
        """Round-robin: one message from each waiting cluster in turn, until the batch has
        `batch_max_events` events (and at least one message)."""
        batch: list[_Pending] = []
        events = 0
        while self._turns and events < self._batch_max_events:
            cluster = self._turns.popleft()
            queue = self._queues[cluster]
            item = queue.popleft()
            batch.append(item)
            events += item.events
            if queue:
                self._turns.append(cluster)
            else:
                del self._queues[cluster]
        self._queued -= len(batch)
        self._queued_bytes -= sum(p.size for p in batch)
        self._queued_heartbeats -= sum(isinstance(p.message, Heartbeat) for p in batch)
        self._maybe_resume()
        if not self._turns:
            self._first_queued = None
            self._ready.clear()  # refusals set it again; the loop also wakes every second
        return batch

    async def _linger(self) -> None:
        """While only heartbeats wait (and fewer than a batch), wait until the first of them
        has waited `heartbeat_linger_s`: a fleet's heartbeats arrive one by one, and each
        batch is a transaction. Anything else queued, or a job, ends the wait at once."""
        while (
            self._linger_s > 0
            and self._first_queued is not None
            and self._queued == self._queued_heartbeats
            and not self._jobs
        ):
            left = self._first_queued + self._linger_s - time.monotonic()
            if left <= 0:
                return
            self._urgent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._urgent.wait(), left)

    # -- applying ------------------------------------------------------------------------

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
                if message.last:
                    self._relisting.pop(cluster, None)
                return reflector.snapshot_chunk(
                    snapshot_id=message.snapshot_id,
                    kind=message.kind,
                    chunk=message.chunk,
                    last=message.last,
                    resource_version=message.resource_version,
                    items=message.items,
                    replace=message.replace,
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

    async def run(self) -> None:
        """Apply batches until cancelled; a failing database is retried, never skipped."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), 1.0)
            await self._linger()
            await self._run_jobs()
            batch = self._take_batch()
            relist: dict[str, set[KindKey | None]] = {}
            for pending in batch:
                reflection = self._reflect(pending)
                pending.deltas = reflection.deltas
                if reflection.relist:
                    relist.setdefault(pending.cluster, set()).update(reflection.relist)
            started = time.monotonic()
            self._writing = sorted(batch, key=lambda p: p.enqueued)
            applied = await self._commit(batch, relist) if batch else Applied()
            took = time.monotonic() - started
            if took > SLOW_BATCH_S:
                log.warning(
                    "slow batch: %d messages, %d changes committed in %.0f ms (%s)",
                    len(batch),
                    len(applied.changes),
                    took * 1000,
                    ", ".join(
                        f"{n} {k}"
                        for k, n in Counter(
                            type(d).__name__ for p in batch for d in p.deltas
                        ).items()
                    ),
                )
            await self._hand_over_workload_messages(batch)
            self._writing = []
            await self._write_dead_letters()
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_result(None)
            self.stats.messages += len(batch)
            self.stats.batches += bool(batch)
            self.stats.changes += len(applied.changes)
            self._feed.publish([*applied.changes, *applied.clusters], applied.labels)
            for cluster, kinds in self.admission.relist_wanted.items():
                relist.setdefault(cluster, set()).update(kinds)
            self.admission.relist_wanted = {}
            self._quota_changes(relist)
            await self._after_commit(batch, relist)

    async def _commit(
        self, batch: list[_Pending], relist: dict[str, set[KindKey | None]]
    ) -> Applied:
        """Commit the batch, isolating what cannot be stored down to single objects; kinds
        whose digest differed are added to `relist`."""
        total = Applied()

        async def write(group: list[_Part]) -> None:
            applied = await self._writer.apply([d for part in group for d in part.deltas])
            total.changes.extend(applied.changes)
            total.clusters.extend(applied.clusters)
            total.labels.update(applied.labels)
            total.skipped += applied.skipped
            for cluster, kinds in applied.resync.items():
                relist.setdefault(cluster, set()).update(kinds or {EVERYTHING})

        parts = [_Part(p, p.deltas) for p in batch]
        await self._isolator.write(
            parts, write, lambda part, exc: self._unstorable(part, exc, parts), _Part.halves
        )
        return total

    def _unstorable(self, part: _Part, exc: Exception, parts: list[_Part]) -> None:
        """`part` cannot be stored: one object (refuse it, as if the agent had never sent
        it), or a message's other work (refuse the message, and give up any snapshot it
        was part of: a snapshot missing a chunk must not sweep)."""
        pending = part.pending
        cause = getattr(exc, "orig", None) or exc
        detail = f"cannot be stored: {type(cause).__name__}: {cause}".split("\n", 1)[0]
        refuse = functools.partial(
            self.refusals.reject,
            "unstorable",
            pending.topic,
            detail,
            cluster=pending.cluster,
            type_=pending.type,
            size=pending.size,
        )
        reflector = self._reflectors[pending.cluster]
        (delta,) = part.deltas if len(part.deltas) == 1 else (None,)
        if isinstance(delta, Upsert):
            ref = delta.event.ref
            refuse(payload=delta.event.json, object_=f"{ref.kind} {ref.namespace}/{ref.name}")
            kind, name = ref.kind_key, (ref.namespace, ref.name)
            if isinstance(pending.message, SnapshotChunk):  # its sweep removes what is stored
                reflector.unsee(kind, name)
                for other in parts:
                    if other.pending.cluster == pending.cluster:
                        other.deltas = [_unsee(d, kind, name) for d in other.deltas]
            else:  # a relist replaces the version stored before this event
                self.admission.relist_wanted.setdefault(pending.cluster, set()).add(kind)
            return
        kinds = {d.event.ref.kind_key for d in part.deltas if isinstance(d, Upsert)}
        refuse(payload=b"[" + b",".join(_objects_json(pending.message))[:8192] + b"]")
        if kinds:
            reflector.abandon(kinds)
            for other in parts:
                if other.pending.cluster == pending.cluster:
                    other.deltas = [
                        d for d in other.deltas if not (isinstance(d, Sweep) and d.kind in kinds)
                    ]
            self.admission.relist_wanted.setdefault(pending.cluster, set()).update(kinds)

    async def _hand_over_workload_messages(self, batch: list[_Pending]) -> None:
        handler = self._on_workload_messages
        messages: list[tuple[str, AgentMessage]] = [
            (p.cluster, p.message)
            for p in batch
            if isinstance(p.message, WorkloadStatus | WorkloadResync)
        ]
        if not messages or handler is None:
            return

        def refuse(item: tuple[str, AgentMessage], exc: Exception) -> None:
            cluster, message = item
            detail = f"cannot be stored: {type(exc).__name__}: {exc}".split("\n", 1)[0]
            topic = topics.agent_events(self._source, cluster)
            self.refusals.reject(
                "unstorable", topic, detail, cluster=cluster, type_=message_type(message)
            )

        await self._isolator.write(messages, handler, refuse)

    async def _write_dead_letters(self) -> None:
        records = self.dead_letters.take()
        if not records:
            return
        try:
            await self._writer.apply([], records)
        except Exception as exc:
            if is_data_error(exc):
                log.error(
                    "dropped %d dead-letter records that cannot be stored: %s", len(records), exc
                )
            else:
                self.dead_letters.put_back(records)

    def _quota_changes(self, relist: dict[str, set[KindKey | None]]) -> None:
        """Record clusters going over quota; ask the calm ones to relist what they lost."""
        entered, self.quota.entered = self.quota.entered, []
        settings = self.quota.settings
        for over in entered:
            self.refusals.reject(
                "over_quota",
                topics.agent_events(self._source, over.cluster),
                f"over its quota ({settings.messages_per_s:g} messages/s, "
                f"{settings.bytes_per_s:g} bytes/s): dropping its messages until it is calm "
                f"for {settings.calm_s:g}s",
                cluster=over.cluster,
                counted=False,  # each dropped message is counted as it is dropped
            )
        for calm in self.quota.calmed():
            self._calmed(calm)
            relist.setdefault(calm.cluster, set()).add(EVERYTHING)

    def _calmed(self, calm: OverQuota) -> None:
        log.warning(
            "cluster %s is within its quota again: %d messages (%d bytes) were dropped over "
            "%.1fs; asking it to relist everything",
            calm.cluster,
            calm.dropped,
            calm.dropped_bytes,
            time.monotonic() - calm.since,
        )

    async def _after_commit(
        self, batch: list[_Pending], relist: dict[str, set[KindKey | None]]
    ) -> None:
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
        for cluster, wanted in relist.items():
            if EVERYTHING in wanted:
                kinds: tuple[KindKey, ...] = ()
                if not self.relists.allow(cluster, EVERYTHING):
                    continue
            else:
                kinds = tuple(
                    sorted(
                        (k for k in wanted if k is not None and self.relists.allow(cluster, k)),
                        key=str,
                    )
                )
                if not kinds:
                    continue
            self.stats.relists += 1
            self._relisting[cluster] = time.monotonic()
            await self._request_resync(cluster, kinds)


def _unsee(delta: Delta, kind: KindKey, name: tuple[str, str]) -> Delta:
    if isinstance(delta, Sweep) and delta.kind == kind and name in delta.seen:
        return dataclasses.replace(delta, seen=delta.seen - {name})
    return delta


def _objects_json(message: AgentMessage) -> list[bytes]:
    if isinstance(message, WatchEvents):
        return [e.json for e in message.events]
    return [e.json for e in message.items] if isinstance(message, SnapshotChunk) else []
