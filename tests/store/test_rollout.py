"""Delivery states in SQL: the expression agrees with the Python rule, counting is one
grouped query, pages filter by state, name and labels, and scopes hold."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.roles import ClusterScope
from app.informer.deltas import ClusterHello
from app.informer.selectors import LabelSelector
from app.store import rollout
from app.store import workloads as store
from app.store.delivery_state import delivery_state, health_of, state_sql
from app.store.migrate import upgrade
from app.store.tables import deliveries
from app.store.workloads import Wanted
from app.store.writer import InventoryWriter
from app.transport.messages import WorkloadStatus
from tests.fleet_rows import spread, write_rollout


async def test_the_sql_state_is_the_python_state_for_every_combination(
    engine: AsyncEngine,
) -> None:
    rows = []
    combos = itertools.product(
        (False, True),
        ((1, 0, 0), (2, 1, 1), (2, 2, 1), (2, 2, 2), (2, 3, 3)),
        ("", "boom"),
        ("", "Degraded", "Available"),
    )
    for n, (removing, (wanted, sent, acked), error, health) in enumerate(combos):
        rows.append(
            {
                "workload": "w",
                "cluster": f"c{n:03d}",
                "version_wanted": wanted,
                "version_sent": sent,
                "version_acked": acked,
                "removing": removing,
                "conditions": [],
                "health": health,
                "feedback": {},
                "last_error": error,
                "status_hash": "",
                "attempts": 0,
                "next_send_at": 0.0,
                "sent_at": 0.0,
                "updated_at": 0.0,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(deliveries.insert(), rows)
    async with engine.connect() as conn:
        found = dict(
            (await conn.execute(select(deliveries.c.cluster, state_sql(deliveries)))).all()
        )
    expected = {
        r["cluster"]: delivery_state(
            removing=r["removing"],
            version_wanted=r["version_wanted"],
            version_sent=r["version_sent"],
            version_acked=r["version_acked"],
            last_error=r["last_error"],
            health=r["health"],
        )
        for r in rows
    }
    assert found == expected
    assert set(expected.values()) == {
        "Deleting",
        "Pending",
        "Delivered",
        "Failed",
        "Degraded",
        "Available",
        "Applied",
    }


def test_health_comes_from_the_conditions() -> None:
    assert health_of([]) == ""
    assert health_of([{"type": "Available", "status": "True"}]) == "Available"
    degraded = [{"type": "Available", "status": "True"}, {"type": "Degraded", "status": "True"}]
    assert health_of(degraded) == "Degraded"
    assert health_of([{"type": "Available", "status": "False"}]) == ""


async def _clusters(engine: AsyncEngine, count: int) -> list[str]:
    names = [f"c{i:03d}" for i in range(count)]
    env = ("prod", "dev")
    await InventoryWriter(engine).apply(
        [ClusterHello(n, {"env": env[i % 2]}, (), 10.0, "t") for i, n in enumerate(names)]
    )
    return names


async def test_counts_by_state_are_grouped_in_sql_and_scoped(engine: AsyncEngine) -> None:
    names = await _clusters(engine, 40)
    await write_rollout(engine, "web", names, {"labelSelector": "env"})
    await write_rollout(engine, "api", names[:10], {"labelSelector": "env"})
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", _record(statements))
    counts = await rollout.state_counts(engine, ["web", "api"])
    assert len(statements) == 1 and "GROUP BY" in statements[0]
    expected = {"Available": 24, "Applied": 4, "Delivered": 4, "Pending": 4}
    assert counts["web"] == {**expected, "Failed": 2, "Degraded": 2}
    assert list(counts["web"]) == [
        "Available",
        "Applied",
        "Delivered",
        "Pending",
        "Failed",
        "Degraded",
    ]
    assert counts["api"] == {
        "Available": 6,
        "Applied": 1,
        "Delivered": 1,
        "Pending": 1,
        "Degraded": 1,
    }
    dev = await rollout.state_counts(engine, ["web"], scope=ClusterScope.parse("env=dev"))
    assert sum(dev["web"].values()) == 20
    assert await rollout.state_counts(engine, []) == {}


def _record(into: list[str]):  # type: ignore[no-untyped-def]
    def before(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        into.append(statement)

    return before


async def test_a_page_of_deliveries_filters_by_state_name_and_labels(engine: AsyncEngine) -> None:
    names = await _clusters(engine, 40)
    await write_rollout(engine, "web", names, {"labelSelector": "env"})
    everything = rollout.DeliveryFilter()
    first = await rollout.delivery_page(engine, "web", everything, limit=10)
    assert first.total == 40 and len(first.rows) == 10
    # problems first: Failed, Degraded, then Pending, Delivered, Applied, Available
    assert [r.state for r in first.rows[:4]] == ["Failed", "Failed", "Degraded", "Degraded"]
    pages = [
        await rollout.delivery_page(engine, "web", everything, offset=o, limit=10)
        for o in range(0, 40, 10)
    ]
    seen = [r.cluster for p in pages for r in p.rows]
    assert sorted(seen) == names
    pending = await rollout.delivery_page(
        engine, "web", rollout.DeliveryFilter(states=("Pending",))
    )
    assert pending.total == 4 and {r.state for r in pending.rows} == {"Pending"}
    by_name = await rollout.delivery_page(
        engine, "web", rollout.DeliveryFilter(cluster_contains="C01")
    )
    assert sorted(r.cluster for r in by_name.rows) == [f"c{i:03d}" for i in range(10, 20)]
    wild = await rollout.delivery_page(engine, "web", rollout.DeliveryFilter(cluster_contains="%"))
    assert wild.total == 0  # LIKE wildcards are matched literally
    dev = rollout.DeliveryFilter(labels=LabelSelector.parse("env=dev"))
    assert (await rollout.delivery_page(engine, "web", dev)).total == 20
    scoped = rollout.DeliveryFilter(scope=ClusterScope.parse("env=prod"), states=("Available",))
    page = await rollout.delivery_page(engine, "web", scoped)
    assert page.total == 12 and all(int(r.cluster[1:]) % 2 == 0 for r in page.rows)
    assert [spread(names.index(r.cluster)) for r in page.rows] == ["Available"] * 12


async def test_a_status_stores_the_health_its_conditions_give(engine: AsyncEngine) -> None:
    (cluster,) = await _clusters(engine, 1)
    now = time.time()
    await write_rollout(engine, "web", [cluster], {"clusters": [cluster]}, lambda _i: "Applied")
    degraded = [{"type": "Degraded", "status": "True"}]
    status = WorkloadStatus("web", 1, False, degraded, {}, "", "h2")
    await store.record_status(engine, cluster, [status], now)
    (row,) = await store.deliveries_of(engine, "web")
    assert row.health == "Degraded" and row.state == "Degraded"
    assert await rollout.state_counts(engine, ["web"]) == {"web": {"Degraded": 1}}
    # a new version wanted: Pending again whatever the conditions said
    await store.sync_deliveries(engine, [Wanted("web", cluster, 2)], [], now)
    assert await rollout.state_counts(engine, ["web"]) == {"web": {"Pending": 1}}


def test_the_migration_fills_health_from_stored_conditions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    upgrade(url, "0006")
    import sqlite3

    db = sqlite3.connect(tmp_path / "old.db")
    columns = (
        "workload, cluster, version_wanted, version_sent, version_acked, removing, state, "
        "conditions, feedback, last_error, status_hash, attempts, next_send_at, sent_at, "
        "updated_at"
    )
    for cluster, conditions in (
        ("a", '[{"type": "Available", "status": "True"}]'),
        ("b", '[{"type": "Degraded", "status": "True"}]'),
        ("c", "[]"),
    ):
        db.execute(
            f"INSERT INTO deliveries ({columns}) VALUES "
            "('w', ?, 1, 1, 1, 0, 'Pending', ?, '{}', '', '', 1, 0, 0, 0)",
            (cluster, conditions),
        )
    db.commit()
    db.close()
    upgrade(url)
    db = sqlite3.connect(tmp_path / "old.db")
    rows = db.execute("SELECT cluster, health FROM deliveries ORDER BY cluster").fetchall()
    names = [r[1] for r in db.execute("PRAGMA table_info(deliveries)")]
    db.close()
    assert rows == [("a", "Available"), ("b", "Degraded"), ("c", "")]
    assert "state" not in names and "health" in names
