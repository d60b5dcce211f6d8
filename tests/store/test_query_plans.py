"""SQLite plans the dashboard's reads by the cluster, not by the tombstone index: with
`deleted = 0` it chose `ix_resources_tombstones` and visited every live object of the
fleet for one cluster's page (39 ms instead of 0.1 ms at 300,000 objects)."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from app.store import queries
from app.store.db import create_engine
from app.store.fleet import fleet_state, kind_counts
from app.store.migrate import upgrade_async
from app.store.queries import ResourceQuery


async def plans(path: Path, read: Callable[[Any], Awaitable[object]]) -> list[str]:
    """The query plan of every statement `read(engine)` runs."""
    engine = create_engine(f"sqlite:///{path}")
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        seen.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    await read(engine)
    await engine.dispose()
    db = sqlite3.connect(path)
    try:
        return [
            " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in seen
            if sql.lstrip().upper().startswith("SELECT")
        ]
    finally:
        db.close()


async def test_one_clusters_reads_are_planned_by_the_cluster(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    await upgrade_async(f"sqlite:///{path}")
    reads = [
        lambda e: queries.list_resources(e, ResourceQuery(cluster="c1"), order="name"),
        lambda e: queries.list_resources(e, ResourceQuery()),
        lambda e: queries.namespaces(e, "c1"),
        lambda e: kind_counts(e, ["c1", "c2"]),
        lambda e: fleet_state(e, refused_since=0.0),
    ]
    for read in reads:
        for plan in await plans(path, read):
            assert "ix_resources_tombstones" not in plan, plan
