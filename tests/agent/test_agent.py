"""The agent against a real broker and hub: Kubernetes source end to end, and its limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from app.agent.service import MAX_OBJECT_BYTES, Agent
from app.agent.sources.kubernetes import KubernetesSource
from app.broker import Mosquitto
from app.informer.objects import MAX_OBJECT_DEPTH, KindKey
from tests.agent.fake_kube_api import FakeKubeApi
from tests.conftest import wait_until
from tests.harness import LiveHub, live_hub, sim_names, synced_cluster

PODS, NODES = KindKey("v1", "Pod"), KindKey("v1", "Node")


async def hub_has(hub: LiveHub, cluster: str, expected: set[str]) -> bool:
    return {name for _, name in await hub.names(cluster)} == expected


async def test_kubernetes_agent_lists_once_then_streams_changes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with (
        FakeKubeApi.serving() as fake,
        live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub,
        ApiClient(Configuration(host=fake.url)) as client,
    ):
        fake.create("pods", "web-1")
        fake.create("pods", "web-2", namespace="shop")
        fake.create("nodes", "node-1")
        source = KubernetesSource(kinds=[PODS, NODES], api_client=client)
        agent = Agent(
            cluster="k8s-1",
            source=source,
            broker_url=broker.url,
            labels={},
            heartbeat_s=0.5,
            resync_s=1.0,
        )
        async with agent:
            await wait_until(
                lambda: hub_has(hub, "k8s-1", {"default/web-1", "shop/web-2", "/node-1"})
            )
            fake.delete("pods", "web-1")
            fake.create("pods", "web-3")
            await wait_until(
                lambda: hub_has(hub, "k8s-1", {"shop/web-2", "/node-1", "default/web-3"})
            )
            # let a few digests pass: they agree, so nothing is listed again
            await wait_until(lambda: _digests_sent(hub, 3), what="digests checked")
        assert sorted(plural for plural, _ in fake.list_requests) == ["nodes", "pods"]


async def _digests_sent(hub: LiveHub, at_least: int) -> bool:
    return hub.hub.ingest.stats.messages >= at_least + 10


def _huge() -> dict[str, Any]:
    return {"data": {"blob": "x" * (MAX_OBJECT_BYTES + 1)}}


def _too_deep() -> dict[str, Any]:
    inner: dict[str, Any] = {}
    for _ in range(MAX_OBJECT_DEPTH + 10):
        inner = {"a": inner}
    return {"data": {"deep": inner}}


@pytest.mark.parametrize(("shape", "counter"), [(_huge, "oversized"), (_too_deep, "unsendable")])
async def test_an_object_the_hub_would_refuse_is_skipped_not_relisted_forever(
    broker: Mosquitto, tmp_path: Path, shape: Any, counter: str
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        agent,
        sim,
    ):
        huge: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "huge", "namespace": "default"},
            **shape(),
        }
        sim.apply(huge)
        sim.mutate(5)
        await wait_until(lambda: _counted(agent, counter))
        await wait_until(lambda: _all_but_huge(hub, sim), what="everything but the refused one")
        assert hub.hub.ingest.stats.rejected == {}
        # digests keep agreeing (both sides leave the object out): no relist, ever
        sent = agent.sent_messages
        await wait_until(lambda: _sent_more(agent, sent + 6), what="a few digest periods")
        assert hub.hub.ingest.stats.relists == 0


async def _all_but_huge(hub: LiveHub, sim: Any) -> bool:
    expected = await sim_names(sim)
    del expected[("ConfigMap", "default/huge")]
    return await hub.names("dev-1") == expected


async def _sent_more(agent: Agent, count: int) -> bool:
    return agent.sent_messages >= count


async def _counted(agent: Agent, counter: str) -> bool:
    return bool(getattr(agent, counter) >= 1)
