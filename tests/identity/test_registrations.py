"""The hub's view of registrations: registered elsewhere (the CLI, another hub) is seen
after an unknown cluster's message, at most every refresh interval; removed here is never
brought back by a read that started before; the admin's labels win."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub.registrations import Registrations
from app.store import registrations as store
from tests.conftest import wait_until


async def test_a_cluster_registered_elsewhere_is_admitted_after_its_first_refused_message(
    engine: AsyncEngine,
) -> None:
    registry = Registrations(engine, accept_any=False, refresh_s=0.3)
    await registry.load()
    refresher = asyncio.ensure_future(registry.refresh_when_asked())
    try:
        await store.register(
            engine, "prod-1", {"env": "prod"}, token_hash=None, token_expires_at=0, now=time.time()
        )
        assert not registry.admits("prod-1")  # refused, and asks for a re-read
        started = time.monotonic()

        async def admitted() -> bool:
            return registry.admits("prod-1")

        await wait_until(admitted, within=3, what="re-read")
        assert time.monotonic() - started < 1.0
        assert registry.labels("prod-1", {"env": "dev"}) == {"env": "prod"}
    finally:
        refresher.cancel()
        await asyncio.gather(refresher, return_exceptions=True)


async def test_removed_here_stays_removed_and_accept_any_registers_by_hello(
    engine: AsyncEngine,
) -> None:
    registry = Registrations(engine, accept_any=True, refresh_s=0.1)
    await registry.load()
    assert registry.admits("anyone")
    registry.said_hello("dev-7", {"env": "dev"})

    async def recorded() -> bool:
        return "dev-7" in await store.registered(engine)

    await wait_until(recorded, what="auto-registration stored")
    assert registry.labels("dev-7", {"env": "other"}) == {"env": "other"}  # its own labels

    now = [100.0]
    strict = Registrations(engine, accept_any=False, clock=lambda: now[0])
    await strict.load()
    assert strict.admits("dev-7")
    reading = asyncio.ensure_future(strict.load())  # started before the removal ...
    await asyncio.sleep(0)
    now[0] += 1
    strict.removed("dev-7")  # ... whose commit it may not have seen: it must not undo it
    await reading
    assert not strict.admits("dev-7")
    now[0] += 1
    await strict.load()  # a read that starts after the removal trusts the database
    assert strict.admits("dev-7")
    await registry.close()


async def test_a_storm_of_first_hellos_is_stored_together_under_the_write_lock(
    engine: AsyncEngine,
) -> None:
    """10,000 new clusters connecting at once must not be 10,000 transactions racing the
    ingest writer for SQLite's lock (they failed with "database is locked")."""
    lock = asyncio.Lock()
    registry = Registrations(engine, accept_any=True, lock=lock)
    await registry.load()
    async with lock:  # ingest is writing
        for i in range(2000):
            registry.said_hello(f"c-{i}", {"n": str(i)})
        assert len(registry._tasks) == 1  # one writer takes every waiting name
        await asyncio.sleep(0.05)
        assert await store.registered(engine) == {}

    async def recorded() -> bool:
        return len(await store.registered(engine)) == 2000

    await wait_until(recorded, what="every auto-registration stored")
    registry.said_hello("c-7", {})  # known: nothing more to store
    assert not registry._tasks
    await registry.close()
