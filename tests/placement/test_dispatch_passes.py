"""The dispatcher at fleet size: one pass sends every due delivery, page after page, and
stops at a broker that takes nothing more."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import ClusterHello
from app.placement.dispatcher import DUE_PAGE, Dispatcher
from app.store import workloads as store
from app.store.writer import InventoryWriter

CLUSTERS = 2 * DUE_PAGE + 50
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}}


async def _placed(engine: AsyncEngine) -> None:
    names = [f"c{i:03d}" for i in range(CLUSTERS)]
    await InventoryWriter(engine).apply(
        [ClusterHello(n, {"env": "prod"}, (), 10.0, "t") for n in names]
    )
    values = {
        "name": "web",
        "manifests": [CONFIGMAP],
        "update_strategy": "ServerSideApply",
        "delete_option": "Foreground",
        "feedback_rules": [],
        "placement": {"labelSelector": "env=prod"},
        "scope": "",
    }
    await store.create_workload(engine, values, time.time())


async def test_one_pass_sends_a_workload_to_more_clusters_than_a_page(
    engine: AsyncEngine,
) -> None:
    await _placed(engine)
    sent: list[str] = []

    async def publish(topic: str, _payload: bytes) -> None:
        sent.append(topic)

    dispatcher = Dispatcher(engine=engine, lock=asyncio.Lock(), publish=publish, source="hub")
    await dispatcher.pass_once()
    assert len(sent) == len(set(sent)) == CLUSTERS
    assert {r.state for r in await store.deliveries_of(engine, "web")} == {"Delivered"}


async def test_a_pass_stops_at_a_broker_that_takes_nothing_more(engine: AsyncEngine) -> None:
    await _placed(engine)
    sent: list[str] = []

    async def publish(topic: str, _payload: bytes) -> None:
        if len(sent) == DUE_PAGE + 10:
            await asyncio.Event().wait()  # the broker is away: this send never completes
        sent.append(topic)

    dispatcher = Dispatcher(engine=engine, lock=asyncio.Lock(), publish=publish, source="hub")
    await asyncio.wait_for(dispatcher.pass_once(), 30)
    states = [r.state for r in await store.deliveries_of(engine, "web")]
    assert states.count("Delivered") == DUE_PAGE + 10
    assert states.count("Pending") == CLUSTERS - DUE_PAGE - 10
