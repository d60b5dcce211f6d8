"""PostgreSQL faults on the hub's database, and private databases to inflict them on.

- `terminate_backends`: every `every_s`, `pg_terminate_backend` on every `pg_stat_activity`
  row of the database (but our own), for `for_s` seconds: connections die mid-query, as
  when a failover or an administrator kills sessions.
- `lock_table`: `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` held in an open transaction for
  `for_s` seconds: every reader and writer of the table waits.
Both only ever touch the database named, which this run created (`private_database`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

ADMIN_URL = os.environ.get("TI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def database_url(name: str) -> str:
    return f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"


@asynccontextmanager
async def private_database(prefix: str = "ti_faults") -> AsyncIterator[str]:
    """A new, empty database for the block (the hub migrates it); dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def terminate_backends(database: str, *, for_s: float, every_s: float = 0.3) -> int:
    """Terminate the database's backends repeatedly; how many were terminated in all."""
    admin = await asyncpg.connect(ADMIN_URL)
    killed = 0
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + for_s
        while loop.time() < deadline:
            killed += await admin.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            await asyncio.sleep(every_s)
    finally:
        await admin.close()
    return int(killed)


async def lock_table(database: str, table: str, *, for_s: float) -> None:
    """Hold an ACCESS EXCLUSIVE lock on `table` for `for_s` seconds, then roll back."""
    conn = await asyncpg.connect(database_url(database))
    try:
        async with conn.transaction():
            await conn.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
            await asyncio.sleep(for_s)
            raise _Release
    except _Release:
        pass
    finally:
        await conn.close()


class _Release(Exception):
    """Rolls the locking transaction back (it changed nothing)."""
