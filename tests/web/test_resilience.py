"""REST reads through database blips (issue 8): a lost connection is retried once, a locked
table answers 503 with Retry-After after the read lock timeout instead of hanging."""

from __future__ import annotations

import time

import asyncpg
import pytest

from app.broker import Mosquitto
from tests.harness import live_hub


async def _terminate_hub_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_reads_survive_terminated_backends_and_never_hang_on_a_lock(
    broker: Mosquitto, pg_url: str
) -> None:
    async with live_hub(broker_url=broker.url, database_url=pg_url, read_lock_timeout_s=0.5) as hub:
        for path in ("/clusters", "/resources", "/rejections"):
            assert (await hub.http.get(path)).status_code == 200
        for _ in range(3):  # every pooled connection is dead: the first use of each fails
            assert await _terminate_hub_connections(pg_url) >= 1
            for path in ("/clusters", "/resources", "/rejections", "/"):
                response = await hub.http.get(path)
                assert response.status_code == 200, (path, response.text)
        locker = await asyncpg.connect(pg_url)
        try:
            tx = locker.transaction()
            await tx.start()
            await locker.execute("LOCK TABLE revision_counter IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            response = await hub.http.get("/resources")
            took = time.monotonic() - started
            assert response.status_code == 503 and took < 3.0, (response.text, took)
            assert response.headers["Retry-After"] == "1"
            assert "unavailable" in response.json()["detail"]
            await tx.rollback()
        finally:
            await locker.close()
        assert (await hub.http.get("/resources")).status_code == 200


def _lost_connection() -> Exception:
    from sqlalchemy.exc import DBAPIError

    orig = ConnectionResetError("server closed the connection")
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=True)


@pytest.mark.parametrize("failures", [1, 2])
async def test_a_get_is_retried_once_then_answered_503(failures: int) -> None:
    import httpx
    from fastapi import APIRouter, FastAPI
    from sqlalchemy.exc import DBAPIError

    from app.web.resilience import RetryingRoute, unavailable

    calls = 0
    router = APIRouter(route_class=RetryingRoute)

    @router.get("/thing")
    async def thing() -> dict[str, int]:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise _lost_connection()
        return {"calls": calls}

    @router.post("/thing")
    async def change() -> dict[str, int]:
        raise _lost_connection()

    app = FastAPI()
    app.add_exception_handler(DBAPIError, unavailable)
    app.include_router(router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        response = await http.get("/thing")
        if failures == 1:
            assert response.status_code == 200 and response.json() == {"calls": 2}
        else:
            assert response.status_code == 503 and response.headers["Retry-After"] == "1"
            assert calls == 2
        posted = await http.post("/thing")  # a change is never repeated behind the client
        assert posted.status_code == 503
