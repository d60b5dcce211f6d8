"""Agent -> real mosquitto -> hub -> SQL -> REST/SSE, in one process."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import delete

from app.broker import Mosquitto
from app.store.tables import resources
from app.transport import cloudevents, topics
from app.transport.mqtt import LinkOptions, MqttLink
from tests.conftest import wait_until
from tests.harness import LiveHub, SseReader, in_sync, live_hub, sim_agent, synced_cluster


async def test_objects_reach_rest_and_stay_exact_under_churn(
    broker: Mosquitto, database_url: str
) -> None:
    async with live_hub(broker_url=broker.url, database_url=database_url) as hub:
        agent, sim = sim_agent("prod-1", broker.url, labels={"env": "prod"})
        async with agent:
            await wait_until(lambda: in_sync(hub, "prod-1", sim), what="initial sync")
            for _ in range(5):
                sim.mutate(20)
                await asyncio.sleep(0.05)
            await wait_until(lambda: in_sync(hub, "prod-1", sim), what="sync after churn")
            cluster = await hub.get("/clusters/prod-1")
            assert cluster["online"] and cluster["labels"] == {"env": "prod"}
            assert cluster["servedBy"] == "hub-test"
            assert sum(cluster["counts"].values()) == sim.count()
            web = await hub.get("/resources", kind="Pod", labelSelector="app=web")
            assert web["items"] and all(i["cluster"] == "prod-1" for i in web["items"])
            assert all(i["metadata"]["labels"]["app"] == "web" for i in web["items"])
        await wait_until(
            lambda: _offline(hub, "prod-1"), what="offline after the agent said goodbye"
        )


async def _offline(hub: LiveHub, cluster: str) -> bool:
    return not (await hub.get(f"/clusters/{cluster}"))["online"]


async def test_list_then_stream_from_its_revision_misses_nothing(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        listed = await hub.get("/clusters/dev-1/resources", kind="Pod")
        rv = int(listed["resourceVersion"])
        before = sim.resource_version
        sim.mutate(30)
        await wait_until(lambda: in_sync(hub, "dev-1", sim))
        now = int((await hub.get("/resources", limit=1))["resourceVersion"])
        assert now > rv
        async with hub.http.stream(
            "GET", "/stream", params={"cluster": "dev-1", "resourceVersion": str(rv)}
        ) as response:
            assert response.status_code == 200
            events = await SseReader(response).next(now - rv)
        ids = [int(e["id"]) for e in events]
        assert ids == list(range(rv + 1, now + 1))
        rvs = [
            int(orjson.loads(e["data"])["object"]["metadata"]["resourceVersion"]) for e in events
        ]
        assert min(rvs) > before


async def test_live_change_reaches_an_open_stream_and_resume_skips_nothing(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        sim,
    ):
        async with hub.http.stream("GET", "/stream", params={"kind": "Pod"}) as response:
            reader = SseReader(response)
            (bookmark,) = await reader.next(1)
            assert bookmark["event"] == "BOOKMARK"
            pod = next(iter((await sim.list(sim.kinds[1])).items))
            pod["metadata"]["labels"]["touched"] = "yes"
            sim.apply(pod)
            (change,) = await reader.next(1)
        assert change["event"] == "MODIFIED"
        data = orjson.loads(change["data"])
        assert data["cluster"] == "dev-1"
        assert data["object"]["metadata"]["labels"]["touched"] == "yes"
        sim.mutate(10)
        await wait_until(lambda: in_sync(hub, "dev-1", sim))
        now = int((await hub.get("/resources", limit=1))["resourceVersion"])
        last = int(change["id"])
        headers = {"Last-Event-ID": change["id"]}
        async with hub.http.stream("GET", "/stream", headers=headers) as response:
            resumed = await SseReader(response).next(now - last)
        assert [int(e["id"]) for e in resumed] == list(range(last + 1, now + 1))


async def test_resume_from_a_trimmed_revision_gets_reset(broker: Mosquitto, tmp_path: Any) -> None:
    async with synced_cluster(
        broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1", hub={"retain_changes": 10}
    ) as (hub, _agent, _sim):
        await asyncio.sleep(0.5)  # let maintenance trim the log
        async with hub.http.stream("GET", "/stream", params={"resourceVersion": "1"}) as r:
            (reset,) = await SseReader(r).next(1)
        assert reset["event"] == "RESET"


async def test_drift_in_the_store_is_repaired_by_digest_resync(
    broker: Mosquitto, database_url: str
) -> None:
    async with synced_cluster(broker.url, database_url, "prod-2") as (hub, _agent, sim):
        async with hub.hub.engine.begin() as conn:
            await conn.execute(delete(resources).where(resources.c.kind == "Pod"))
        assert await hub.names("prod-2", kind="Pod") == {}
        await wait_until(lambda: in_sync(hub, "prod-2", sim), what="repair by resync")


async def test_changes_made_while_the_broker_is_down_arrive_conflated(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "edge-1") as (
        hub,
        agent,
        sim,
    ):
        broker.stop()
        await wait_until(lambda: _not_connected(agent), what="agent notices")
        for _ in range(20):
            sim.mutate(50)  # 1,000 changes to ~40 objects
        assert len(agent.pending) < 1000  # conflated per object
        broker.start()
        await wait_until(
            lambda: in_sync(hub, "edge-1", sim), within=20, what="sync after the outage"
        )


async def _not_connected(agent: Any) -> bool:
    return not agent.link.connected


async def test_bad_messages_are_rejected_counted_and_change_nothing(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        _sim,
    ):
        before = await hub.names("dev-1")
        topic = topics.agent_events(topics.DEFAULT_SOURCE, "dev-1")

        def envelope(type_: str, data: Any, cluster: str = "dev-1") -> bytes:
            return cloudevents.encode(cloudevents.CloudEvent(type_, "test", cluster, data))

        watch = "io.transport-informer.v1.resources.status.update_request"
        bad = [
            b"not json at all",
            orjson.dumps({"specversion": "1.0", "type": watch}),
            envelope(watch, {"events": [{"type": "ADDED", "object": {"kind": "Pod"}}]}),
            envelope(watch, {"events": []}, cluster="prod-1"),
            envelope("io.example.unknown", {}),
            envelope(watch, {"events": [{"type": "ADDED", "object": {"x": "y" * 600_000}}]}),
            envelope(
                "io.transport-informer.v1.clusters.status.hello",
                {"protocol": 2, "kinds": [], "heartbeatSeconds": 1},
            ),
        ]
        async with MqttLink(LinkOptions(url=broker.url, client_id="intruder")) as link:
            for payload in bad:
                await link.publish(topic, payload)
            await link.flush()
        await wait_until(lambda: _rejected(hub, len(bad)), what="all rejected")
        assert await hub.names("dev-1") == before
        assert dict(hub.hub.ingest.stats.rejected) == {
            "not_json": 1,
            "malformed": 1,
            "bad_object": 1,
            "cluster_mismatch": 1,
            "unknown_type": 1,
            "oversized": 1,
            "protocol": 1,
        }
        metrics = (await hub.http.get("/metrics")).text
        assert 'ti_ingest_rejected_total{reason="oversized"} 1' in metrics
        assert "ti_broker_connected 1" in metrics
        assert (await hub.get("/healthz"))["status"] == "ok"


async def _rejected(hub: LiveHub, count: int) -> bool:
    return sum(hub.hub.ingest.stats.rejected.values()) >= count


async def test_http_errors_say_what_is_wrong(broker: Mosquitto, tmp_path: Any) -> None:
    async with synced_cluster(broker.url, f"sqlite:///{tmp_path}/h.db", "dev-1") as (
        hub,
        _agent,
        _sim,
    ):
        cases = [
            ("/clusters/nope", {}, 404),
            ("/clusters/nope/resources", {}, 404),
            ("/clusters/dev-1/resources/Pod/default/nope", {}, 404),
            ("/clusters/dev-1/resources", {"labelSelector": "a in (b"}, 400),
            ("/resources", {"fieldSelector": "spec.x=1"}, 400),
            ("/resources", {"continue": "!!!"}, 400),
            ("/resources", {"limit": "5000"}, 422),
            ("/stream", {"resourceVersion": "abc"}, 400),
        ]
        for path, params, status in cases:
            response = await hub.http.get(path, params=params)
            assert response.status_code == status, (path, response.text)
            assert response.json()["detail"]
        ready = await hub.get("/readyz")
        assert ready["ready"] is True
        assert ready["checks"] == {"database": True, "broker": True, "ingest": True}
        node = (await hub.get("/clusters/dev-1/resources", kind="ConfigMap", limit=1))["items"][0]
        meta = node["metadata"]
        one = await hub.get(
            f"/clusters/dev-1/resources/ConfigMap/{meta['namespace']}/{meta['name']}"
        )
        assert one == node


async def test_redis_mapping_is_rebuilt_after_a_flush(
    broker: Mosquitto, tmp_path: Any, redis_url: str
) -> None:
    import redis.asyncio as redis

    async with live_hub(
        broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db", redis_url=redis_url
    ) as hub:
        agent, _sim = sim_agent("prod-1", broker.url)
        async with agent:
            await wait_until(lambda: _served(hub, "hub-test"))
            client = redis.Redis.from_url(redis_url)
            await client.flushall()
            assert (await hub.get("/clusters/prod-1"))["servedBy"] is None
            await wait_until(lambda: _served(hub, "hub-test"), within=3, what="rebuilt mapping")
            assert (await hub.get("/readyz"))["checks"]["redis"] is True
            await client.aclose()


async def _served(hub: LiveHub, replica: str) -> bool:
    response = await hub.http.get("/clusters/prod-1")
    return response.status_code == 200 and response.json()["servedBy"] == replica


async def test_a_label_selected_stream_sees_objects_leave_and_enter_as_a_watch_would(
    broker: Mosquitto, tmp_path: Any
) -> None:
    from tests.harness import RawAgent
    from tests.hub.test_poison import known
    from tests.objects import pod

    async with (
        live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub,
        RawAgent(broker.url, "dev-1") as agent,
    ):
        await agent.hello("v1/Pod")
        await wait_until(lambda: known(hub, "dev-1"), what="dev-1 known")
        params = {"labelSelector": "app=web", "cluster": "dev-1"}
        async with hub.http.stream("GET", "/stream", params=params) as response:
            reader = SseReader(response)
            (bookmark,) = await reader.next(1)
            for rv, app in enumerate(["web", "web", "db", "db", "web"], start=1):
                await agent.events(("MODIFIED", pod("p", rv, labels={"app": app})))
            live = await reader.next(4)
        assert [e["event"] for e in live] == ["ADDED", "MODIFIED", "DELETED", "ADDED"]
        async with hub.http.stream(
            "GET", "/stream", params=params, headers={"Last-Event-ID": bookmark["id"]}
        ) as response:
            replayed = await SseReader(response).next(4)
        assert [e["event"] for e in replayed] == ["ADDED", "MODIFIED", "DELETED", "ADDED"]
        rvs = [orjson.loads(e["data"])["object"]["metadata"]["resourceVersion"] for e in replayed]
        assert rvs == ["1", "2", "3", "5"]


async def test_a_forged_version_far_above_the_cluster_does_not_survive_its_relist(
    broker: Mosquitto, database_url: str
) -> None:
    """Someone published, as this cluster, a real object at resourceVersion 2^63-1 and one
    that does not exist: the digest differs, the agent relists, and the replacing snapshot
    restores the real object and removes the fake, whatever their versions (issue 8)."""
    from tests.harness import RawAgent

    async with synced_cluster(broker.url, database_url, "prod-1") as (hub, agent, sim):
        real = next(iter((await sim.list(sim.kinds[1])).items))
        forged = {**real, "spec": {"image": "evil"}}
        forged["metadata"] = {**real["metadata"], "resourceVersion": str(2**63 - 1)}
        fake = {**forged, "metadata": {**forged["metadata"], "name": "fake", "uid": "u-fake"}}
        async with RawAgent(broker.url, "prod-1") as attacker:
            await attacker.events(("MODIFIED", forged), ("ADDED", fake))
        await wait_until(lambda: _has_name(hub, "prod-1", "fake"), what="the forged objects stored")
        await wait_until(lambda: in_sync(hub, "prod-1", sim), within=20, what="repaired")
        stored = await hub.get(
            f"/clusters/prod-1/resources/Pod/{real['metadata']['namespace']}/"
            f"{real['metadata']['name']}"
        )
        assert stored == real
        assert agent.source.kinds  # the agent kept running throughout


async def _has_name(hub: LiveHub, cluster: str, name: str) -> bool:
    return any(n.endswith(f"/{name}") for _, n in await hub.names(cluster))
