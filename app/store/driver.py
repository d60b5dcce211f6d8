"""The writer's hot statements, sent to the driver in as few round trips as it allows.

On SQLite every call through SQLAlchemy's aiosqlite adapter is several round trips to
aiosqlite's worker thread (cursor, execute, fetch, close): 19 for a batch of one change. Each
trip is a thread hand-off, so a batch of one change cost 3.6 to 7 ms where plain sqlite3
takes 0.2 ms, and at moderate rates, where batches are small, that fixed cost is most of the
change-to-SSE latency. `DirectSqlite` sends each statement as one trip on the same connection,
inside the same transaction that SQLAlchemy opened and will commit.

The driver's own exceptions (`sqlite3.IntegrityError`, ...) then reach the caller unwrapped;
`app.store.errors` classifies both forms. On PostgreSQL (asyncpg: no thread, one network round
trip per statement either way) statements go through SQLAlchemy as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


class Driver(Protocol):
    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement; its result rows (none for a plain write)."""
        ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (executemany)."""
        ...


class ThroughSqlAlchemy:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        result = await self._conn.exec_driver_sql(sql, tuple(params))
        return list(result) if result.returns_rows else []

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._conn.exec_driver_sql(sql, list(rows))


class DirectSqlite:
    """Statements straight to the `aiosqlite.Connection` under SQLAlchemy's connection."""

    def __init__(self, aiosqlite_connection: Any) -> None:
        self._db = aiosqlite_connection

    async def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)


async def driver_for(conn: AsyncConnection) -> Driver:
    """The fastest way to send raw statements on `conn`, in its transaction."""
    if conn.dialect.name != "sqlite":
        return ThroughSqlAlchemy(conn)
    raw = await conn.get_raw_connection()
    return DirectSqlite(raw.driver_connection)
