"""The outbox at fleet size: placing a workload, re-arming a new version, marking a page
sent and recording the agents' statuses each cost a fixed number of statements, however
many clusters (a workload on 1,000 clusters once took 1,000 statements for each, under the
writer's lock)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import ClusterHello
from app.store import workloads as store
from app.store.workloads import Wanted
from app.store.writer import InventoryWriter
from app.transport.messages import WorkloadStatus

CLUSTERS = 300
AVAILABLE = [{"type": "Applied", "status": "True"}, {"type": "Available", "status": "True"}]


async def _clusters(engine: AsyncEngine) -> list[str]:
    names = [f"c{i:03d}" for i in range(CLUSTERS)]
    await InventoryWriter(engine).apply([ClusterHello(n, {}, (), 10.0, "t") for n in names])
    return names


def _writes(engine: AsyncEngine) -> list[str]:
    """The INSERT, UPDATE and DELETE statements the engine runs from now on."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_placing_and_changing_a_workload_is_one_statement_each(engine: AsyncEngine) -> None:
    names = await _clusters(engine)
    now = time.time()
    writes = _writes(engine)
    assert await store.sync_deliveries(engine, [Wanted("web", c, 1) for c in names], [], now) == 300
    assert len(writes) == 1 and writes[0].lstrip().upper().startswith("INSERT")
    rows = await store.deliveries_of(engine, "web")
    assert [r.cluster for r in rows] == names and {r.state for r in rows} == {"Pending"}
    writes.clear()
    assert await store.sync_deliveries(engine, [Wanted("web", c, 2) for c in names], [], now) == 300
    assert len(writes) == 1
    rows = await store.deliveries_of(engine, "web")
    assert {(r.version_wanted, r.attempts, r.next_send_at) for r in rows} == {(2, 0, 0.0)}


async def test_marking_a_page_sent_is_one_statement(engine: AsyncEngine) -> None:
    names = await _clusters(engine)
    now = time.time()
    await store.sync_deliveries(engine, [Wanted("web", c, 1) for c in names], [], now)
    due = await store.due_deliveries(engine, now, limit=CLUSTERS)
    writes = _writes(engine)
    await store.mark_sent(engine, [(r, now + 5) for r in due], now)
    assert len(writes) == 1
    rows = await store.deliveries_of(engine, "web")
    assert {(r.version_sent, r.attempts, r.next_send_at, r.state) for r in rows} == {
        (1, 1, now + 5, "Delivered")
    }
    assert await store.due_deliveries(engine, now + 1) == []


async def test_statuses_of_many_clusters_are_recorded_in_one_transaction(
    engine: AsyncEngine,
) -> None:
    names = await _clusters(engine)
    now = time.time()
    await store.sync_deliveries(engine, [Wanted("web", c, 1) for c in names], [], now)
    await store.mark_sent(engine, [(r, now + 5) for r in await store.deliveries_of(engine)], now)
    commits: list[None] = []
    event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(None))
    statuses = [(c, WorkloadStatus("web", 1, False, AVAILABLE, {}, "", "h")) for c in names]
    assert await store.record_statuses(engine, statuses, now) == ["web"] * CLUSTERS
    assert len(commits) == 1
    rows = await store.deliveries_of(engine, "web")
    assert {(r.version_acked, r.state) for r in rows} == {(1, "Available")}
