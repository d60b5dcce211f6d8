"""Removing a cluster: the hub refuses what it still has in flight, its inventory goes (or
stays), and the broker refuses its certificate and ends its connection, within a bound."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from app.agent.identity import AgentIdentity, join
from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.broker import Mosquitto
from app.transport import probe
from tests.conftest import wait_until
from tests.harness import KINDS, LiveHub, SseReader, in_sync
from tests.identity.conftest import Pki, pki_hub, register

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def joined_agent(
    hub: LiveHub, tmp_path: Path, name: str = "prod-1"
) -> AsyncIterator[tuple[Agent, SimulatedCluster, AgentIdentity]]:
    ticket = await register(hub, name, labels={"env": "prod"})
    identity = await join(tmp_path / name, name, hub.url, ticket["token"])
    sim = SimulatedCluster(cluster=name, objects=60, churn_per_s=0, seed=3, kinds=KINDS)
    agent = Agent(
        cluster=name,
        source=sim,
        broker_url=identity.broker_url,
        labels={},
        heartbeat_s=0.5,
        resync_s=1.0,
        tls=identity.tls_context(),
    )
    async with agent:
        await wait_until(lambda: in_sync(hub, name, sim), what=f"{name} synced")
        yield agent, sim, identity


async def _false(value: bool) -> bool:
    return not value


async def test_removal_refuses_messages_in_flight_deletes_inventory_and_disconnects(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(secure_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        async with joined_agent(hub, tmp_path) as (agent, sim, identity), AsyncExitStack() as s:
            objects = len(await hub.names("prod-1"))
            page = await hub.get("/clusters/prod-1/resources", limit=1)
            stream = await s.enter_async_context(
                hub.http.stream(
                    "GET",
                    "/stream",
                    params={"cluster": "prod-1", "resourceVersion": page["resourceVersion"]},
                )
            )
            watcher = SseReader(stream)  # live from here on
            hub.hub.link.pause_reading()  # what the agent sends now waits at the broker
            sent = agent.sent_messages
            for _ in range(5):
                sim.mutate(10)
                await asyncio.sleep(0.1)
            await wait_until(lambda: _true(agent.sent_messages >= sent + 5), what="sent")
            await agent.link.flush()  # the broker has them all (PUBACK)

            started = time.monotonic()
            response = await hub.http.delete("/clusters/prod-1")
            answered = time.monotonic() - started
            await wait_until(lambda: _false(agent.link.connected), within=5, what="kicked")
            disconnected = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert response.json()["revokedAtBroker"] is True
            seen = await asyncio.wait_for(watcher.next(objects), 10)
            assert [e["event"] for e in seen] == ["DELETED"] * objects

            hub.hub.link.resume_reading()
            rejected = hub.hub.ingest.stats.rejected
            await wait_until(lambda: _true(rejected["unregistered"] >= 5), what="refused")
            answer = await probe.attempt("127.0.0.1", secure_broker.port, identity.tls_context())
            assert answer is probe.Answer.REFUSED
            await asyncio.sleep(1.0)  # the agent keeps trying, and is refused at the broker
            assert not agent.link.connected

        assert (await hub.http.get("/clusters/prod-1")).status_code == 404
        assert (await hub.get("/resources", kind="Pod"))["items"] == []
        assert (await hub.get("/registrations"))["items"] == []
        reasons = (await hub.get("/rejections", cluster="prod-1"))["counts"]
        assert reasons["unregistered"] >= 5
    assert disconnected < 3.0, disconnected
    print(f"DELETE answered in {answered:.3f} s, agent disconnected after {disconnected:.3f} s")


async def _true(value: bool) -> bool:
    return value


async def test_removal_from_the_cli_keeps_the_inventory_and_reaches_the_hub_within_the_refresh(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/hub.db"
    async with pki_hub(secure_broker, pki, database, registry_refresh_s=1.0) as hub:
        async with joined_agent(hub, tmp_path) as (agent, _sim, _identity):
            before = await hub.names("prod-1")
            started = time.monotonic()
            cli = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "app", "clusters", "remove", "prod-1", "--keep-inventory"],
                env={**os.environ, "TI_DATABASE_URL": database},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0, cli.stderr
            assert "keeps its inventory" in cli.stdout
            await wait_until(lambda: _false(agent.link.connected), within=10, what="kicked")
            disconnected = time.monotonic() - started
        assert await hub.names("prod-1") == before
        cluster = await hub.get("/clusters/prod-1")
        assert cluster["online"] is False
    assert disconnected < 1.0 + 3.0 + 2.0, disconnected  # CLI start + refresh + revocation
    print(f"CLI removal: agent disconnected after {disconnected:.3f} s (refresh 1 s)")
