"""Certificate renewal while changes flow: the agent renews over HTTPS with its current
certificate, reconnects with the new one under the same client id (persistent session),
and the hub ends holding exactly the cluster's truth, having never needed a relist."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from app.agent.identity import Renewer, join
from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.broker import Mosquitto
from app.store.tables import changes
from tests.conftest import wait_until
from tests.harness import KINDS, in_sync
from tests.identity.conftest import Pki, pki_hub, register

pytestmark = pytest.mark.timeout(120)

LIFETIME_S = 6.0
"""Renewal at 2/3: every 4 s."""


async def test_renewal_under_churn_loses_and_repeats_nothing(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/hub.db"
    async with pki_hub(secure_broker, pki, database, cert_lifetime_s=LIFETIME_S) as hub:
        ticket = await register(hub, "prod-1")
        identity = await join(tmp_path / "state", "prod-1", hub.url, ticket["token"])
        sim = SimulatedCluster(cluster="prod-1", objects=300, churn_per_s=0, seed=9, kinds=KINDS)
        agent = Agent(
            cluster="prod-1",
            source=sim,
            broker_url=identity.broker_url,
            labels={},
            heartbeat_s=0.5,
            resync_s=3600,  # no periodic digest: only the one sent on every reconnect
            tls=identity.tls_context(),
        )
        renewer = Renewer(identity, agent.link)
        churned = 0

        async def churn() -> None:
            nonlocal churned
            while True:
                sim.mutate(20)  # 400 changes a second, through every reconnect
                churned += 20
                await asyncio.sleep(0.05)

        async with agent, asyncio.TaskGroup() as tasks:
            renewing = tasks.create_task(renewer.run())
            churning = tasks.create_task(churn())
            started = time.monotonic()
            await wait_until(lambda: _true(renewer.renewals >= 3), within=40, what="three renewals")
            churning.cancel()
            renewing.cancel()
            took = time.monotonic() - started
            await wait_until(lambda: in_sync(hub, "prod-1", sim), within=20, what="in sync")
            connects = agent.link.connects

        stats = hub.hub.ingest.stats
        assert renewer.renewals >= 3 and connects >= 4, (renewer.renewals, connects)
        assert stats.relists == 0, "a digest after a reconnect differed: something was lost"
        assert churned > 2000
        async with hub.hub.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(changes.c.kind, changes.c.namespace, changes.c.name, changes.c.body)
                    .where(changes.c.cluster == "prod-1")
                    .order_by(changes.c.revision)
                )
            ).all()
        versions: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for kind, namespace, name, body in rows:
            versions[(kind, namespace, name)].append(int(body["metadata"]["resourceVersion"]))
        repeated = {k: v for k, v in versions.items() if v != sorted(set(v))}
        assert not repeated, list(repeated.items())[:3]
        print(f"{renewer.renewals} renewals in {took:.1f} s, {churned} changes, {len(rows)} logged")


async def _true(value: bool) -> bool:
    return value
