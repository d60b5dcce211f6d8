"""The hub's delivery loop: placement decisions -> outbox rows -> MQTT, until acknowledged.

- Placement is re-evaluated every pass (and at once when woken: a workload changed, a
  cluster said hello or changed labels): newly matching clusters get the workload, clusters
  no longer matching get it removed, a deleted workload is removed everywhere and then
  forgotten.
- What is to be sent lives in the `deliveries` table (an outbox), so a hub restart resends.
  A row is sent when due and re-sent with backoff (5 s doubling to 60 s) until the agent
  acknowledges the version, which it does only after applying it.
- An agent that connects sends the versions it holds; anything newer is sent at once, and
  workloads it holds that the hub no longer places there are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.selectors import LabelSelector, SelectorError
from app.store import workloads as store
from app.store.workloads import DeliveryRow, Wanted, WorkloadRow
from app.transport import cloudevents, topics
from app.transport.messages import (
    AgentMessage,
    MessageType,
    WorkloadApply,
    WorkloadRemove,
    WorkloadResync,
    WorkloadStatus,
    WorkloadStatusResync,
    workload_apply_data,
    workload_remove_data,
    workload_status_resync_data,
)

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
"""Send a hub -> agent message to one cluster."""


def choose_clusters(
    placement: dict[str, object],
    labels: dict[str, dict[str, str]],
    current: set[str],
    scope: str = "",
) -> list[str]:
    """The clusters a placement picks: named ones and label-selected ones (either may be
    empty), at most `maxClusters`, preferring clusters that already run it, then by name.

    Only clusters whose labels match `scope` (the cluster scope of whoever wrote the
    workload; empty: every cluster) are candidates; a scope that does not parse admits
    none."""
    if scope.strip():
        try:
            within = LabelSelector.parse(scope)
        except SelectorError:
            return []
        labels = {c: lab for c, lab in labels.items() if within.matches(lab)}
    try:
        selector = LabelSelector.parse(str(placement.get("labelSelector") or ""))
    except SelectorError:
        selector = LabelSelector()
    named = {str(n) for n in placement.get("clusters") or []}  # type: ignore[attr-defined]
    picked = [c for c, lab in labels.items() if c in named or (selector and selector.matches(lab))]
    picked.sort(key=lambda c: (c not in current, c))
    limit = placement.get("maxClusters")
    return picked[: int(limit)] if isinstance(limit, int) and limit > 0 else picked


DUE_PAGE = 200
"""Rows read from the outbox at a time."""


def resend_delay(attempts: int, base_s: float = 5.0, cap_s: float = 60.0) -> float:
    return float(min(cap_s, base_s * 2 ** max(0, attempts)))


class Dispatcher:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        lock: asyncio.Lock,
        publish: Publish,
        source: str,
        answer: Publish | None = None,
        period_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`answer` sends the replies to agents' resyncs, which are made inside the ingest
        loop: it must not wait on the broker (the hub's outbox); default `publish`."""
        self._engine = engine
        self._lock = lock
        self._publish = publish
        self._answer = answer or publish
        self._source = source
        self._period_s = period_s
        self._clock = clock
        self._wake = asyncio.Event()
        self.on_change: Callable[[Sequence[str]], None] | None = None
        """Told which workloads' deliveries changed (the dashboard's live matrix)."""

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except Exception:
                log.exception("workload delivery pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._period_s)
            self._wake.clear()

    async def pass_once(self) -> None:
        workloads = {w.name: w for w in await store.list_workloads(self._engine)}
        await self._reconcile(workloads)
        await self._send_due(workloads)

    async def _reconcile(self, workloads: dict[str, WorkloadRow]) -> None:
        labels = await store.cluster_labels(self._engine)
        current: dict[str, set[str]] = {}
        for row in await store.deliveries_of(self._engine):
            if not row.removing:
                current.setdefault(row.workload, set()).add(row.cluster)
        wanted, finished = [], []
        for w in workloads.values():
            if w.deleting:
                if not current.get(w.name) and not await self._pending_removals(w.name):
                    finished.append(w.name)
                continue
            chosen = choose_clusters(w.placement, labels, current.get(w.name, set()), w.scope)
            for cluster in chosen:
                wanted.append(Wanted(w.name, cluster, w.version))
        changed = await store.sync_deliveries(
            self._engine, wanted, finished, self._clock(), self._lock
        )
        if changed and self.on_change:
            self.on_change(list(workloads))

    async def _pending_removals(self, workload: str) -> bool:
        return bool(await store.deliveries_of(self._engine, workload))

    async def _send_due(self, workloads: dict[str, WorkloadRow]) -> None:
        """Send every due row, a page (`DUE_PAGE`) at a time, until none is due or the
        broker is away: a workload on thousands of clusters goes out in one pass, not a
        page per second."""
        while True:
            due = await store.due_deliveries(self._engine, self._clock(), DUE_PAGE)
            if not await self._send_page(workloads, due) or len(due) < DUE_PAGE:
                return

    async def _send_page(self, workloads: dict[str, WorkloadRow], due: list[DeliveryRow]) -> bool:
        """Send `due`; False if the broker stopped taking messages part way."""
        now = self._clock()
        sent: list[tuple[DeliveryRow, float]] = []
        complete = True
        for row in due:
            w = workloads.get(row.workload)
            if row.removing or w is None:
                message: WorkloadApply | WorkloadRemove = WorkloadRemove(
                    row.workload, row.version_wanted, w.delete_option if w else "Foreground"
                )
            else:
                message = WorkloadApply(
                    w.name,
                    w.version,
                    w.manifests,
                    w.update_strategy,
                    w.delete_option,
                    w.feedback_rules,
                )
            try:
                await asyncio.wait_for(self._send(row.cluster, message), 5)
            except TimeoutError:
                log.warning("broker away: delivery of %s to %s waits", row.workload, row.cluster)
                complete = False
                break
            sent.append((row, now + resend_delay(row.attempts)))
        if sent:
            await store.mark_sent(self._engine, sent, now, self._lock)
            if self.on_change:
                self.on_change(sorted({r.workload for r, _ in sent}))
        return complete

    async def _send(
        self,
        cluster: str,
        message: WorkloadApply | WorkloadRemove | WorkloadStatusResync,
        *,
        answer: bool = False,
    ) -> None:
        if isinstance(message, WorkloadApply):
            type_, data = MessageType.WORKLOAD_APPLY, workload_apply_data(message)
        elif isinstance(message, WorkloadRemove):
            type_, data = MessageType.WORKLOAD_REMOVE, workload_remove_data(message)
        else:
            type_ = MessageType.WORKLOAD_STATUS_RESYNC
            data = workload_status_resync_data(message.hashes)
        event = cloudevents.CloudEvent(type_, self._source, cluster, data)
        publish = self._answer if answer else self._publish
        await publish(topics.source_events(self._source, cluster), cloudevents.encode(event))

    async def on_agent_messages(self, items: Sequence[tuple[str, AgentMessage]]) -> None:
        """Status acks and spec resyncs from agents, in arrival order (called by ingest
        before it acknowledges them to the broker)."""
        now = self._clock()
        touched: set[str] = set()
        statuses: list[tuple[str, WorkloadStatus]] = []
        for cluster, message in [*items, ("", None)]:  # the sentinel writes what is left
            if isinstance(message, WorkloadStatus):
                statuses.append((cluster, message))
                continue
            if statuses:  # the statuses since the last resync: one transaction for them all
                touched.update(await store.record_statuses(self._engine, statuses, now, self._lock))
                statuses = []
            if isinstance(message, WorkloadResync):
                stray = await store.resync_cluster(
                    self._engine, cluster, message.held, now, self._lock
                )
                replies: list[WorkloadRemove | WorkloadStatusResync] = [
                    WorkloadRemove(name, message.held[name], "Foreground") for name in stray
                ]
                # OCM's status resync: the agent re-sends the statuses whose hash differs
                replies.append(
                    WorkloadStatusResync(await store.status_hashes(self._engine, cluster))
                )
                for reply in replies:
                    try:  # ingest waits on this: a broker away must not stall it
                        await asyncio.wait_for(self._send(cluster, reply, answer=True), 5)
                    except TimeoutError:
                        log.warning("broker away: could not answer %s's resync", cluster)
                        break
        if touched and self.on_change:
            self.on_change(sorted(touched))
        self.wake()
