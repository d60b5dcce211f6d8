"""Data a real cluster may hold, on SQLite and PostgreSQL alike: U+0000 anywhere in an
object's data round-trips exactly; what the database refuses is told apart from an outage."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import Upsert
from app.informer.objects import WatchEvent
from app.informer.selectors import LabelSelector
from app.store import queries
from app.store.errors import is_data_error
from app.store.kinds import KindRef
from app.store.queries import ResourceQuery
from app.store.records import RejectionRecord
from app.store.rejections import list_rejections, trim_rejections
from app.store.tables import changes, resources
from app.store.writer import InventoryWriter
from tests.objects import pod


def nul_config_map(rv: int) -> dict[str, Any]:
    obj = pod("cfg", rv, kind="ConfigMap", labels={"app": "web", "odd": "a\x00b"})
    obj["metadata"]["annotations"] = {"note": "\x00 at the start", "x\x00": "key too"}
    obj["data"] = {"bin": "\x00\x01\x02 end", "emoji": "🙂", "escape": "\\u0000 as text"}
    return obj


async def test_an_object_holding_nul_round_trips_exactly(engine: AsyncEngine) -> None:
    obj = nul_config_map(3)
    writer = InventoryWriter(engine)
    applied = await writer.apply([Upsert("c1", WatchEvent.of("ADDED", obj, encode=True))])
    assert applied.changes[0].body == obj
    stored = await queries.get_resource(engine, "c1", KindRef("ConfigMap"), "default", "cfg")
    assert stored == obj
    page = await queries.list_resources(engine, ResourceQuery(cluster="c1", kind="ConfigMap"))
    assert page.items == [obj]
    replay = await queries.changes_after(engine, 0, ResourceQuery())
    assert [c.body for c in replay.changes] == [obj]


async def test_labels_holding_nul_stay_in_the_body_but_out_of_the_selectable_index(
    engine: AsyncEngine,
) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", WatchEvent.of("ADDED", nul_config_map(3)))])
    async with engine.connect() as conn:
        labels = await conn.scalar(select(resources.c.labels))
    assert labels == {"app": "web"}
    selected = await queries.list_resources(
        engine, ResourceQuery(labels=LabelSelector.parse("app=web"))
    )
    assert selected.items[0]["metadata"]["labels"]["odd"] == "a\x00b"


async def test_a_label_change_is_logged_with_the_labels_before(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    await writer.apply([Upsert("c1", WatchEvent.of("ADDED", pod("a", 1, labels={"app": "web"})))])
    same = await writer.apply(
        [Upsert("c1", WatchEvent.of("MODIFIED", pod("a", 2, labels={"app": "web"})))]
    )
    moved = await writer.apply(
        [Upsert("c1", WatchEvent.of("MODIFIED", pod("a", 3, labels={"app": "db"})))]
    )
    assert same.changes[0].prev_labels is None
    assert moved.changes[0].prev_labels == {"app": "web"}
    async with engine.connect() as conn:
        logged = (
            await conn.execute(select(changes.c.prev_labels).order_by(changes.c.revision))
        ).all()
    assert [row[0] for row in logged] == [None, None, {"app": "web"}]
    web = ResourceQuery(labels=LabelSelector.parse("app=web"))
    replay = await queries.changes_after(engine, 0, web)
    assert [c.type for c in replay.changes] == ["ADDED", "MODIFIED", "DELETED"]
    db = ResourceQuery(labels=LabelSelector.parse("app=db"))
    assert [c.type for c in (await queries.changes_after(engine, 0, db)).changes] == ["ADDED"]


async def test_dead_letters_are_stored_listed_newest_first_and_trimmed(engine: AsyncEngine) -> None:
    writer = InventoryWriter(engine)
    records = [
        RejectionRecord(
            at=100.0 + i,
            cluster="bad-1" if i % 2 else "bad-2",
            topic="sources/x/consumers/bad-1/agentevents",
            type="io.transport-informer.v1.resources.status.update_request",
            reason="bad_object",
            detail=f"refusal {i} \x00",
            size=10,
            payload=b'{"a":"\\u0000"}\x00\xff'.decode("utf-8", "backslashreplace"),
            object="Pod default/x",
        )
        for i in range(5)
    ]
    await writer.apply([], records)
    page = await list_rejections(engine, cluster="bad-1", limit=1)
    assert [r["detail"] for r in page.items] == ["refusal 3 \\x00"]
    older = await list_rejections(engine, cluster="bad-1", before=page.next_before)
    assert [r["detail"] for r in older.items] == ["refusal 1 \\x00"] and older.next_before is None
    assert await trim_rejections(engine, 2) == 3
    assert len((await list_rejections(engine)).items) == 2


async def test_database_refusals_are_data_errors_outages_are_not(
    engine: AsyncEngine, database_url: str
) -> None:
    async def fails(sql: str, params: Any = ()) -> BaseException:
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(sql, params)
        except Exception as exc:
            return exc
        raise AssertionError(f"{sql} did not fail")

    postgres = database_url.startswith("postgresql")
    mark = "$1" if postgres else "?"
    too_big = await fails(f"UPDATE revision_counter SET value = {mark}", (2**64,))
    assert is_data_error(too_big)
    if postgres:
        assert is_data_error(await fails("SELECT $1::text", ("a\x00b",)))
        assert is_data_error(await fails('SELECT \'{"a": "\\u0000"}\'::jsonb'))
    assert not is_data_error(await fails("SELECT * FROM no_such_table"))
    assert not is_data_error(sqlite3.OperationalError("database is locked"))
    assert is_data_error(sqlite3.IntegrityError("UNIQUE constraint failed: resources.name"))
    assert not is_data_error(ConnectionResetError())
    assert not is_data_error(TimeoutError())


@pytest.mark.parametrize("order", ["age"])
async def test_sorting_by_age_reads_no_bodies(engine: AsyncEngine, order: str) -> None:
    writer = InventoryWriter(engine)
    for i, ts in enumerate(["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", ""]):
        obj = pod(f"p{i}", i + 1)
        if ts:
            obj["metadata"]["creationTimestamp"] = ts
        await writer.apply([Upsert("c1", WatchEvent.of("ADDED", obj))])
    page = await queries.list_resources(engine, ResourceQuery(), order=order)  # type: ignore[arg-type]
    assert [i["metadata"]["name"] for i in page.items] == ["p1", "p0", "p2"]
    async with engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM resources WHERE created = ''")) == 1


@pytest.mark.postgres
async def test_postgresql_plans_each_statement_for_its_parameters(pg_url: str) -> None:
    """A generic plan cached while a table was small (a scan) must not outlive its growth."""
    from app.store.db import create_engine

    engine = create_engine(pg_url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
    finally:
        await engine.dispose()
