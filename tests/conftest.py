"""Shared fixtures: real servers (mosquitto, redis, SQLite and PostgreSQL), never mocks."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.broker import Mosquitto, free_port
from app.store.db import create_engine
from app.store.migrate import upgrade

PG_ADMIN_URL = os.environ.get("TI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition"
) -> None:
    """Poll an async predicate until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(data_dir=tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    import socket

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _pg_database() -> Iterator[str]:
    import asyncpg

    name = f"ti_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this run's own, migrated once."""
    for url in _pg_database():
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: a fresh SQLite file, or the run's PostgreSQL database
    emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/hub.db"
        upgrade(url)
        yield url
        return
    url = request.getfixturevalue("pg_url")

    async def empty() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE resources, changes, clusters, workloads, deliveries, rejections, "
                    "api_tokens, web_sessions, sign_in_tickets, audit_log, "
                    "cluster_registrations, cluster_certificates, cluster_removals"
                )
            )
            await conn.execute(text("UPDATE revision_counter SET value = 0"))
        await engine.dispose()

    asyncio.run(empty())
    yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    import orjson

    from app.hub.service import _json_dumps

    eng = create_engine(database_url, json_serializer=_json_dumps, json_deserializer=orjson.loads)
    yield eng
    await eng.dispose()


@pytest.fixture(autouse=True)
def _reset_sse_exit_flag() -> None:
    """sse-starlette's AppStatus.should_exit is process-global and never reset."""
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = False
