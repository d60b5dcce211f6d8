"""The writer's guarantees, on SQLite and PostgreSQL alike."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import (
    CheckDigest,
    ClusterHello,
    ClusterOffline,
    ClusterSeen,
    Delta,
    Sweep,
    Upsert,
)
from app.informer.digest import kind_digest
from app.informer.objects import KindKey
from app.store.tables import changes, resources
from app.store.writer import InventoryWriter
from tests.objects import event

PODS = KindKey("v1", "Pod")


async def live(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(resources.c.name, resources.c.resource_version).where(
                resources.c.deleted.is_(False)
            )
        )
        return dict(rows.all())


async def test_events_are_stored_and_logged_with_increasing_revisions(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    applied = await writer.apply(
        [
            Upsert("c1", event("ADDED", "a", 1)),
            Upsert("c1", event("MODIFIED", "a", 2)),
            Upsert("c1", event("ADDED", "b", 3)),
        ]
    )
    assert [(c.type, c.name, c.revision) for c in applied.changes] == [
        ("ADDED", "a", 1),
        ("MODIFIED", "a", 2),
        ("ADDED", "b", 3),
    ]
    again = await writer.apply([Upsert("c1", event("MODIFIED", "b", 4))])
    assert again.changes[0].revision == 4
    assert await live(engine) == {"a": 2, "b": 4}


async def test_stale_and_duplicate_events_change_nothing(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", event("ADDED", "a", 5))])
    applied = await writer.apply(
        [Upsert("c1", event("MODIFIED", "a", 5)), Upsert("c1", event("MODIFIED", "a", 3))]
    )
    assert applied.changes == [] and applied.skipped == 2
    assert await live(engine) == {"a": 5}


async def test_tombstone_beats_a_late_older_event(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", event("ADDED", "a", 1))])
    deleted = await writer.apply([Upsert("c1", event("DELETED", "a", 4))])
    assert [c.type for c in deleted.changes] == ["DELETED"]
    late = await writer.apply([Upsert("c1", event("MODIFIED", "a", 3))])
    assert late.changes == [] and await live(engine) == {}
    recreated = await writer.apply([Upsert("c1", event("ADDED", "a", 9, uid="new"))])
    assert [c.type for c in recreated.changes] == ["ADDED"]


async def test_delete_of_an_unknown_object_leaves_only_a_tombstone(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    applied = await writer.apply(
        [Upsert("c1", event("DELETED", "ghost", 4)), Upsert("c1", event("ADDED", "ghost", 2))]
    )
    assert applied.changes == [] and await live(engine) == {}


async def test_a_merging_sweep_deletes_only_unseen_objects_not_newer_than_the_listing(
    engine: AsyncEngine,
) -> None:
    writer = InventoryWriter(engine)
    await writer.apply(
        [Upsert("c1", event("ADDED", n, rv)) for n, rv in [("keep", 1), ("gone", 2), ("newer", 20)]]
    )
    applied = await writer.apply(
        [Sweep("c1", PODS, frozenset({("default", "keep")}), resource_version=10)]
    )
    assert [(c.type, c.name) for c in applied.changes] == [("DELETED", "gone")]
    assert await live(engine) == {"keep": 1, "newer": 20}
    assert (await writer.apply([Upsert("c1", event("MODIFIED", "gone", 9))])).changes == []


async def test_a_replacing_sweep_deletes_every_unseen_object_whatever_its_version(
    engine: AsyncEngine,
) -> None:
    """Objects watched during the snapshot are in `seen`; anything else the listing lacks is
    gone from the cluster, even stored at a version above the listing's (another history)."""
    writer = InventoryWriter(engine)
    await writer.apply(
        [Upsert("c1", event("ADDED", n, rv)) for n, rv in [("keep", 1), ("gone", 2), ("newer", 20)]]
    )
    await writer.apply([Upsert("c2", event("ADDED", "other-cluster", 1))])
    applied = await writer.apply(
        [Sweep("c1", PODS, frozenset({("default", "keep")}), resource_version=10, replace=True)]
    )
    assert sorted((c.type, c.name, c.cluster) for c in applied.changes) == [
        ("DELETED", "gone", "c1"),
        ("DELETED", "newer", "c1"),
    ]
    assert await live(engine) == {"keep": 1, "other-cluster": 1}
    # the tombstone is at the listing's resourceVersion: an older event cannot resurrect it,
    # and a newer one (the name created again) can
    assert (await writer.apply([Upsert("c1", event("MODIFIED", "gone", 9))])).changes == []
    again = await writer.apply([Upsert("c1", event("ADDED", "newer", 11, uid="other"))])
    assert [(c.type, c.name) for c in again.changes] == [("ADDED", "newer")]


async def test_a_snapshot_item_replaces_a_version_from_another_history(
    engine: AsyncEngine,
) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", event("ADDED", n, 5000)) for n in ("a", "b", "c")])
    await writer.apply([Upsert("c1", event("DELETED", "d", 6000))])
    items = [
        Upsert("c1", event("ADDED", "a", 30, uid="new-a"), replace=True),  # re-created
        Upsert("c1", event("ADDED", "b", 40), replace=True),  # restored: same uid, older
        Upsert("c1", event("ADDED", "c", 5000), replace=True),  # unchanged
        Upsert("c1", event("ADDED", "d", 50), replace=True),  # deleted in a lost future
        Upsert("c1", event("ADDED", "e", 10)),  # a watch event: still guarded
    ]
    applied = await writer.apply(items)
    assert [(c.type, c.name) for c in applied.changes] == [
        ("MODIFIED", "a"),
        ("MODIFIED", "b"),
        ("ADDED", "d"),
        ("ADDED", "e"),
    ]
    assert await live(engine) == {"a": 30, "b": 40, "c": 5000, "d": 50, "e": 10}
    stale = await writer.apply([Upsert("c1", event("MODIFIED", "a", 20, uid="new-a"))])
    assert stale.changes == []  # after the replace, the new history's order holds again


async def test_digest_mismatch_asks_for_a_relist(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", event("ADDED", "a", 1))])
    same = kind_digest([("uid-default-a", 1)])
    applied = await writer.apply([CheckDigest("c1", {PODS: same})])
    assert applied.resync == {}
    applied = await writer.apply([CheckDigest("c1", {PODS: kind_digest([])})])
    assert applied.resync == {"c1": {PODS}}


async def test_a_batch_of_digests_is_checked_together_against_what_preceded_each(
    engine: AsyncEngine,
) -> None:
    """Many clusters' digests in one batch (checked in one statement at 10,000 clusters):
    each is compared with its cluster's rows as they stood when it came, not after the
    cluster's later events of the same batch."""
    writer = InventoryWriter(engine)
    await writer.apply([Upsert(f"c{i}", event("ADDED", "a", 1)) for i in range(300)])
    one = kind_digest([("uid-default-a", 1)])
    two = kind_digest([("uid-default-a", 1), ("uid-default-b", 2)])
    deltas: list[Delta] = [CheckDigest(f"c{i}", {PODS: one}) for i in range(300)]
    deltas += [Upsert("c7", event("ADDED", "b", 2)), CheckDigest("c7", {PODS: two})]
    deltas += [CheckDigest("c8", {PODS: two}), CheckDigest("nobody", {PODS: kind_digest([])})]
    applied = await writer.apply(deltas)
    assert applied.resync == {"c8": {PODS}}


async def test_cluster_lifecycle_reports_online_changes(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    hello = ClusterHello("c1", {"env": "prod"}, (PODS,), 5.0, "1")
    applied = await writer.apply([hello, ClusterSeen("c1")])
    assert [(s.name, s.online) for s in applied.clusters] == [("c1", True)]
    assert (await writer.apply([ClusterSeen("c1")])).clusters == []
    assert [s.online for s in (await writer.apply([ClusterOffline("c1", "bye")])).clusters] == [
        False
    ]


async def test_heartbeat_from_an_unknown_cluster_asks_for_everything(engine: AsyncEngine) -> None:
    applied = await InventoryWriter(engine).apply([ClusterSeen("stranger")])
    assert applied.resync == {"stranger": set()}


async def test_a_large_batch_is_one_transaction(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    deltas = [Upsert("c1", event("ADDED", f"p{i}", i + 1)) for i in range(2500)]
    applied = await writer.apply(deltas)
    assert len(applied.changes) == 2500
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.max(changes.c.revision))) == 2500


async def test_a_hello_without_a_kind_deletes_that_clusters_objects_of_it(
    engine: AsyncEngine,
) -> None:
    writer = InventoryWriter(engine)
    nodes = KindKey("v1", "Node")
    await writer.apply([ClusterHello("c1", {}, (PODS, nodes), 5.0, "1")])
    await writer.apply(
        [
            Upsert("c1", event("ADDED", "p", 1)),
            Upsert("c1", event("ADDED", "n", 2, kind="Node", namespace="")),
            Upsert("c2", event("ADDED", "n", 2, kind="Node", namespace="")),
        ]
    )
    same = await writer.apply([ClusterHello("c1", {}, (nodes, PODS), 5.0, "1")])
    assert same.changes == []
    fewer = await writer.apply([ClusterHello("c1", {}, (PODS,), 5.0, "1")])
    assert [(c.type, c.kind, c.cluster) for c in fewer.changes] == [("DELETED", "Node", "c1")]
    assert await live(engine) == {"p": 1, "n": 2}  # c2's Node stays
    back = await writer.apply(
        [
            ClusterHello("c1", {}, (PODS, nodes), 5.0, "1"),
            Upsert("c1", event("ADDED", "n", 1, kind="Node", namespace="")),
        ]
    )
    assert [(c.type, c.kind) for c in back.changes] == [("ADDED", "Node")]  # tombstone at 0
