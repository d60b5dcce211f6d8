"""The overview's reads of the store, on both databases: every cluster with its live
objects and recent refusals, a page's kind counts, the first clusters of a scope."""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.roles import ClusterScope
from app.informer.deltas import ClusterHello, ClusterOffline, Upsert
from app.informer.objects import KindKey
from app.store.fleet import first_clusters, fleet_state, kind_counts
from app.store.records import RejectionRecord
from app.store.writer import InventoryWriter
from tests.objects import event

POD = KindKey("v1", "Pod")


async def test_every_cluster_with_its_live_objects_and_recent_refusals(
    engine: AsyncEngine,
) -> None:
    writer = InventoryWriter(engine)
    await writer.apply(
        [
            ClusterHello("a", {"env": "prod"}, (POD,), 10.0, "1"),
            ClusterHello("b", {"env": "dev"}, (POD,), 10.0, "1"),
            ClusterHello("c", {}, (POD,), 10.0, "1"),
            Upsert("a", event("ADDED", "p1", 1)),
            Upsert("a", event("ADDED", "p2", 2)),
            Upsert("a", event("ADDED", "cm", 3, kind="ConfigMap")),
            Upsert("b", event("ADDED", "p1", 4)),
            Upsert("b", event("DELETED", "p1", 5)),
            ClusterOffline("c", "bye"),
        ],
        [
            RejectionRecord(time.time() - 3600, "b", "t", "x", "too_large", "old", 10, ""),
            RejectionRecord(time.time(), "b", "t", "x", "too_large", "new", 10, "", suppressed=4),
        ],
    )
    states = await fleet_state(engine, refused_since=time.time() - 600)
    assert [(s.name, s.online, s.objects, s.refused) for s in states] == [
        ("a", True, 3, 0),
        ("b", True, 0, 5),  # a tombstone is no object; one recent refusal and 4 suppressed
        ("c", False, 0, 0),
    ]
    assert states[0].labels == {"env": "prod"} and states[0].last_seen > 0
    assert await kind_counts(engine, ["a", "b"]) == {"a": {"ConfigMap": 1, "Pod": 2}}
    assert await kind_counts(engine, []) == {}
    assert [n for n, _ in await first_clusters(engine, 2)] == ["a", "b"]
    dev = await first_clusters(engine, 5, scope=ClusterScope.parse("env=dev"))
    assert dev == [("b", {"env": "dev"})]
