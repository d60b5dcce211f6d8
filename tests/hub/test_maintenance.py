"""Upkeep deletes in small transactions and keeps exactly what it promises."""

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub import maintenance
from app.informer.deltas import ClusterHello, Upsert
from app.informer.objects import KindKey
from app.store.tables import changes, resources
from app.store.writer import InventoryWriter
from tests.objects import event


async def count(engine: AsyncEngine, query: object) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)  # type: ignore[call-overload]


async def test_trim_keeps_the_newest_changes(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "DELETE_CHUNK", 7)
    await InventoryWriter(engine).apply(
        [Upsert("c1", event("ADDED", f"p{i}", i + 1)) for i in range(50)]
    )
    assert await maintenance.trim_changes(engine, retain=12) == 38
    assert await count(engine, select(func.min(changes.c.revision))) == 39
    assert await maintenance.trim_changes(engine, retain=12) == 0


async def test_old_tombstones_go_and_live_objects_stay(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maintenance, "DELETE_CHUNK", 3)
    writer = InventoryWriter(engine, clock=lambda: 100.0)
    await writer.apply([Upsert("c1", event("ADDED", f"p{i}", i + 1)) for i in range(10)])
    await writer.apply([Upsert("c1", event("DELETED", f"p{i}", 20 + i)) for i in range(8)])
    assert await maintenance.drop_tombstones(engine, older_than=50.0) == 0
    assert await maintenance.drop_tombstones(engine, older_than=200.0) == 8
    assert await count(engine, select(func.count()).select_from(resources)) == 2


async def test_silent_clusters_are_marked_offline_once(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine, clock=lambda: 100.0)
    await writer.apply([ClusterHello("c1", {}, (KindKey("v1", "Pod"),), 5.0, "1")])
    assert await maintenance.mark_silent_offline(engine, 3, now=110.0) == []
    (status,) = await maintenance.mark_silent_offline(engine, 3, now=120.0)
    assert (status.name, status.online) == ("c1", False)
    assert await maintenance.mark_silent_offline(engine, 3, now=130.0) == []


async def test_clusters_are_not_marked_offline_for_heartbeats_ingest_still_holds(
    engine: AsyncEngine,
) -> None:
    """A hub behind on its backlog (a connect storm) marked thousands of clusters offline
    whose heartbeats waited in its own queue."""
    writer = InventoryWriter(engine, clock=lambda: 100.0)
    await writer.apply([ClusterHello("c1", {}, (KindKey("v1", "Pod"),), 5.0, "1")])
    upkeep = {"retain_changes": 100, "tombstone_ttl_s": 600, "offline_after_heartbeats": 3}
    lagging = await maintenance.run_once(engine, **upkeep, clock=lambda: 130.0, ingest_lag_s=20.0)
    assert lagging == []
    (status,) = await maintenance.run_once(engine, **upkeep, clock=lambda: 130.0)
    assert status.online is False
