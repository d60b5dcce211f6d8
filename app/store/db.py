"""Engines: SQLite (WAL) by default, PostgreSQL in production, both through asyncio drivers."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def async_url(url: str) -> str:
    """Map a plain SQLAlchemy URL to its asyncio driver (`sqlite` -> aiosqlite, `postgresql`
    -> asyncpg); URLs that already name a driver are kept."""
    parsed = make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres") and driver in ("", "psycopg2", "psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use sqlite:// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    # Committing writers never checkpoint (that fsyncs and stalled commits for hundreds of
    # ms); the hub checkpoints from its maintenance loop instead (see `checkpoint`).
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


def create_engine(url: str, *, lock_timeout_s: float | None = None, **kwargs: Any) -> AsyncEngine:
    """An async engine for `url`; for a SQLite file its directory is created. On
    PostgreSQL, `lock_timeout_s` bounds how long a statement waits for a lock (SQLite readers
    never wait: WAL), and statements are planned for their parameters every time
    (`plan_cache_mode = force_custom_plan`): asyncpg prepares and caches statements, and a
    generic plan made while a table was nearly empty (a scan) stays as the table grows; the
    writer's key lookup went from 2.5 ms to 37 ms a chunk at 100,000 rows that way."""
    url = async_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("pool_pre_ping", True)
    settings = {"plan_cache_mode": "force_custom_plan"}
    if lock_timeout_s is not None:
        settings["lock_timeout"] = str(int(lock_timeout_s * 1000))
    kwargs.setdefault("connect_args", {}).setdefault("server_settings", settings)
    return create_async_engine(url, **kwargs)


def dialect_name(engine: AsyncEngine) -> str:
    return engine.dialect.name


async def checkpoint(engine: AsyncEngine) -> None:
    """Copy SQLite's write-ahead log into the database without blocking writers."""
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


async def analyze(engine: AsyncEngine, lock: asyncio.Lock | None = None) -> None:
    """Refresh SQLite's query-planner statistics (PostgreSQL's autovacuum does its own).

    Without them SQLite judged the index on `deleted` as selective as the one on `cluster`
    and read every live row of the fleet for one cluster's question: at 5,000 clusters the
    counts behind `GET /clusters` took 300 ms instead of 131, the digest read 183 ms instead
    of 18. A full ANALYZE took 190 ms there (150,000 objects); it holds the write lock."""
    if engine.dialect.name != "sqlite":
        return
    async with lock or nullcontext(), engine.begin() as conn:
        await conn.exec_driver_sql("ANALYZE")
