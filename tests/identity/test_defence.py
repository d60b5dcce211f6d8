"""Defence in depth: the hub refuses clusters that are not registered on its own, even when
the broker lets everything through (ACL switched off); and the modes that register by
hello (`--accept-any-cluster`, and a hub without PKI) do so, visibly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.agent.identity import join
from app.broker import Mosquitto
from app.informer.objects import KindKey
from app.transport import cloudevents
from app.transport.messages import Hello, MessageType, hello_data
from tests.conftest import wait_until
from tests.harness import LiveHub, live_hub
from tests.identity.conftest import Pki, agent_events, peer, pki_hub, register
from tests.objects import pod

pytestmark = pytest.mark.timeout(60)


def hello(cluster: str, **labels: str) -> bytes:
    data = hello_data(Hello(labels, (KindKey("v1", "Pod"),), 5.0, "test", "i-1"))
    return cloudevents.encode(
        cloudevents.CloudEvent(MessageType.HELLO, f"agent/{cluster}", cluster, data)
    )


def pods(cluster: str) -> bytes:
    data = {"events": [{"type": "ADDED", "object": pod(f"{cluster}-pod", 7)}]}
    return cloudevents.encode(
        cloudevents.CloudEvent(MessageType.WATCH_EVENTS, f"agent/{cluster}", cluster, data)
    )


async def stored_pods(hub: LiveHub) -> list[str]:
    return sorted(i["metadata"]["name"] for i in (await hub.get("/resources"))["items"])


async def test_the_hub_refuses_unregistered_clusters_with_the_broker_acl_switched_off(
    aclless_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(aclless_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        ticket = await register(hub, "prod-1", labels={"env": "prod"})
        identity = await join(tmp_path / "prod-1", "prod-1", hub.url, ticket["token"])
        async with (
            peer(aclless_broker, pki.context("intruder"), "intruder") as intruder,
            peer(aclless_broker, identity.tls_context(), "prod-1") as prod,
        ):
            # The open broker lets all of this through; only the hub stands in the way.
            for sender, cluster in ((intruder, "intruder"), (intruder, "ghost"), (prod, "ghost")):
                sender.publish(agent_events(cluster), hello(cluster, env="prod"))
                sender.publish(agent_events(cluster), pods(cluster))
            prod.publish(agent_events("prod-1"), hello("prod-1", env="stolen"))
            prod.publish(agent_events("prod-1"), pods("prod-1"))
            rejected = hub.hub.ingest.stats.rejected

            async def settled() -> bool:
                return rejected["unregistered"] >= 6 and await stored_pods(hub) == ["prod-1-pod"]

            await wait_until(settled, what="refusals and prod-1's pod")
        clusters = (await hub.get("/clusters"))["items"]
        assert [(c["name"], c["labels"]) for c in clusters] == [("prod-1", {"env": "prod"})]
        refused = (await hub.get("/rejections", reason="unregistered"))["items"]
        assert {r["cluster"] for r in refused} == {"intruder", "ghost"}


async def test_accept_any_cluster_registers_a_cluster_by_its_first_hello(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path}/hub.db"
    async with (
        pki_hub(secure_broker, pki, database, accept_any_cluster=True) as hub,
        peer(secure_broker, pki.context("dev-7"), "dev-7") as dev,
    ):
        dev.publish(agent_events("dev-7"), hello("dev-7", env="dev"))
        dev.publish(agent_events("dev-7"), pods("dev-7"))

        async def registered() -> bool:
            items = (await hub.get("/registrations"))["items"]
            return [(r["name"], r["auto"], r["labels"]) for r in items] == [
                ("dev-7", True, {"env": "dev"})
            ]

        await wait_until(registered, what="auto-registration")
        await wait_until(lambda: _equal(stored_pods(hub), ["dev-7-pod"]), what="stored")


async def _equal(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


async def test_a_hub_without_pki_accepts_any_cluster_and_says_so(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub:
        assert hub.url.startswith("http://")
        assert (await hub.http.get("/agent/ca")).status_code == 404
        refused = await hub.http.post("/clusters", json={"name": "prod-1"})
        assert refused.status_code == 409 and "insecure" in refused.json()["detail"]
        await asyncio.sleep(0)
    assert any("INSECURE MODE" in r.getMessage() for r in caplog.records)
