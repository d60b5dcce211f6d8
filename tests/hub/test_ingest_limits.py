"""Readiness that tells the truth, clusters isolated by quotas, and the values the protocol
leaves open defined (issue 7)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from app.broker import Mosquitto
from app.informer.digest import KindDigest
from app.informer.objects import KindKey
from app.transport import topics
from app.transport.messages import MessageType, digest_data, snapshot_data
from tests.conftest import wait_until
from tests.harness import LiveHub, RawAgent, SseReader, live_hub
from tests.hub.test_poison import config_map, known, stored
from tests.objects import pod


@asynccontextmanager
async def writes_blocked(database_url: str) -> AsyncIterator[None]:
    """Another client holds the write lock: SQLite's database lock, or PostgreSQL's lock on
    the revision counter every write transaction takes first."""
    if database_url.startswith("sqlite"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    pg = await asyncpg.connect(database_url)
    tx = pg.transaction()
    await tx.start()
    await pg.execute("LOCK TABLE revision_counter IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await tx.rollback()
        await pg.close()


async def ready(hub: LiveHub) -> tuple[bool, dict[str, Any]]:
    response = await hub.http.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code == 200, body


async def test_readiness_fails_while_ingest_cannot_commit_and_recovers(
    broker: Mosquitto, database_url: str
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=database_url, stuck_after_s=0.5) as hub,
        RawAgent(broker.url, "prod-1") as agent,
    ):
        await agent.hello("v1/ConfigMap")
        await wait_until(lambda: known(hub, "prod-1"), what="prod-1 known")
        assert (await ready(hub))[0]
        async with writes_blocked(database_url):
            await agent.events(("ADDED", config_map("waits", 5)))

            async def not_ready() -> bool:
                ok, body = await ready(hub)
                return not ok and body["checks"]["ingest"] is False

            await wait_until(not_ready, within=15, what="/readyz to say ingest is stuck")
            _, body = await ready(hub)
            assert body["checks"]["database"] is True  # reads work; writes do not
            assert body["ingest"]["queuedMessages"] >= 1
            assert body["ingest"]["oldestQueuedSeconds"] >= 0.5
            assert await metric(hub, "ti_ingest_stuck_seconds") >= 0.5
        await wait_until(lambda: _is_ready(hub), within=15, what="ready again")
        assert await stored(hub, "prod-1", "ConfigMap", "waits") is not None
        assert await metric(hub, "ti_ingest_stuck_seconds") == 0


async def metric(hub: LiveHub, name: str) -> float:
    """The value of an unlabelled metric on /metrics."""
    for line in (await hub.http.get("/metrics")).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


async def _is_ready(hub: LiveHub) -> bool:
    return (await ready(hub))[0]


async def test_a_flooding_cluster_is_cut_off_and_the_others_flow(
    broker: Mosquitto, tmp_path: Any
) -> None:
    settings = {
        "quota_messages_per_s": 50.0,
        "quota_message_burst": 50.0,
        "quota_calm_s": 1.0,
    }
    async with (
        live_hub(
            broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db", **settings
        ) as hub,
        RawAgent(broker.url, "noisy") as noisy,
        RawAgent(broker.url, "quiet") as quiet,
    ):
        await noisy.hello("v1/ConfigMap")
        await quiet.hello("v1/ConfigMap")
        await wait_until(lambda: known(hub, "quiet"), what="quiet known")
        async with hub.http.stream("GET", "/stream", params={"cluster": "quiet"}) as response:
            reader = SseReader(response)
            await reader.next(1)  # BOOKMARK
            flood = asyncio.ensure_future(_flood(noisy, 3000))
            await asyncio.sleep(0.2)  # the flood is under way
            sent = time.monotonic()
            await quiet.events(("ADDED", config_map("meanwhile", 3)))
            (change,) = await asyncio.wait_for(reader.next(1), 1.0)
            assert change["event"] == "ADDED" and time.monotonic() - sent < 1.0
            noisy_now = await hub.get("/clusters/noisy")
            noisy_page = (await hub.http.get("/ui/clusters/noisy")).text
            await flood
        assert 'class="badge warn"' in noisy_page and "over quota" in noisy_page
        assert noisy_now["overQuota"] is not None and noisy_now["overQuota"]["dropped"] > 0
        assert (await hub.get("/clusters/quiet"))["overQuota"] is None
        refused = await hub.get("/rejections", cluster="noisy", reason="over_quota")
        assert len(refused["items"]) == 1  # one record per episode; each drop is counted
        assert refused["counts"]["over_quota"] > 2000
        # once calm, the cluster is asked to relist everything it may have lost
        await wait_until(
            lambda: _true([] in noisy.resync_requests()), within=10, what="full relist asked"
        )
        assert (await hub.get("/clusters/noisy"))["overQuota"] is None
        assert await metric(hub, "ti_ingest_over_quota_clusters") == 0


async def _flood(agent: RawAgent, count: int) -> None:
    for i in range(count):
        await agent.events(("MODIFIED", config_map("hot", 10 + i)))


async def _true(value: bool) -> bool:
    return value


async def test_inventory_follows_hello_and_stays_within_announced_kinds(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub,
        RawAgent(broker.url, "early") as early,
        RawAgent(broker.url, "pods") as pods,
    ):
        await early.events(("ADDED", pod("a", 1)))  # before any hello
        await wait_until(lambda: _true([] in early.resync_requests()), what="hello asked for")
        await pods.hello("v1/Pod")
        await pods.events(
            ("ADDED", pod("p", 2)),
            ("ADDED", config_map("not-announced", 3)),
            ("BOGUS", pod("q", 4)),
        )
        snapshot = {
            "snapshotId": "s1",
            "apiVersion": "v1",
            "kind": "Pod",
            "resourceVersion": "9",
            "chunk": 0,
            "last": True,
            "items": [pod("p", 2), pod("r", 5), config_map("stray", 6)],
        }
        await pods.send(MessageType.SNAPSHOT, snapshot)
        await pods.send(
            MessageType.SNAPSHOT,
            {**snapshot, "snapshotId": "s2", "apiVersion": "v1", "kind": "ConfigMap", "items": []},
        )
        await wait_until(lambda: _true_async(stored(hub, "pods", "Pod", "r")), what="r stored")
        names = {
            i["metadata"]["name"] for i in (await hub.get("/clusters/pods/resources"))["items"]
        }
        assert names == {"p", "r"}
        counts = (await hub.get("/rejections"))["counts"]
        assert counts == {
            "no_hello": 1,
            "unannounced_kind": 2,  # one event, one snapshot
            "bad_event_type": 1,
            "wrong_kind": 1,
        }


async def _true_async(value: Any) -> bool:
    return await value is not None


async def test_values_the_protocol_leaves_open_are_checked(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub,
        RawAgent(broker.url, "prod-1") as agent,
    ):
        await agent.hello("v1/Pod", heartbeat=2.0)
        await wait_until(lambda: known(hub, "prod-1"), what="prod-1 known")
        for bad in (0, -1, 1e308, 0.01, 3601):
            await agent.hello("v1/Pod", heartbeat=bad)
        hello = {"kinds": [], "heartbeatSeconds": 5, "labels": {"env": "a\x00b"}}
        await agent.send(MessageType.HELLO, hello)
        bad_topic = topics.agent_events(topics.DEFAULT_SOURCE, "Not_A_Name")
        await agent.link.publish(bad_topic, b"{}")

        async def all_refused() -> bool:  # counted at once, recorded with the next write
            rows = (await hub.get("/rejections"))["items"]
            return sorted(r["reason"] for r in rows) == ["malformed"] * 6 + ["topic"]

        await wait_until(all_refused, what="every bad hello refused")
        refused = (await hub.get("/rejections", reason="malformed"))["items"]
        assert any("heartbeatSeconds must be between 0.1 and 3600" in r["detail"] for r in refused)
        assert any("U+0000" in r["detail"] for r in refused)
        topic_row = (await hub.get("/rejections", reason="topic"))["items"][0]
        assert topic_row["cluster"] == "Not_A_Name"
        cluster = await hub.get("/clusters/prod-1")
        assert cluster["online"] is True  # the last valid hello stands


async def test_a_backlog_is_applied_in_order_and_bounded_by_backpressure(
    broker: Mosquitto, tmp_path: Any
) -> None:
    """While writes are blocked the hub stops reading at its bound; afterwards every change
    of the backlog is in the change log, in order (none lost to a reordering broker)."""
    url = f"sqlite:///{tmp_path}/h.db"
    count = 2000  # sent while writes are blocked, and as many again while the hub catches up
    async with (
        live_hub(
            broker_url=broker.url,
            database_url=url,
            ingest_max_queued_messages=500,
            quota_messages_per_s=1e6,
            quota_message_burst=1e6,
        ) as hub,
        RawAgent(broker.url, "busy") as agent,
    ):
        await agent.hello("v1/ConfigMap")
        await wait_until(lambda: known(hub, "busy"), what="busy known")
        async with writes_blocked(url):
            for rv in range(1, count + 1):
                await agent.events(("MODIFIED", config_map("hot", rv)))
            await wait_until(lambda: _true(hub.hub.link.reading_paused), what="reading paused")
            assert 500 <= hub.hub.ingest.queued < 1000
            assert await metric(hub, "ti_ingest_reading_paused") == 1
        for rv in range(count + 1, 2 * count + 1):
            await agent.events(("MODIFIED", config_map("hot", rv)))
        count *= 2
        await wait_until(
            lambda: _stored_rv(hub, "busy", "hot", count), within=30, what="backlog applied"
        )
        assert not hub.hub.link.reading_paused
        params = {"cluster": "busy", "resourceVersion": "0"}
        async with hub.http.stream("GET", "/stream", params=params) as response:
            events = await SseReader(response).next(count)
        rvs = [
            int(orjson.loads(e["data"])["object"]["metadata"]["resourceVersion"]) for e in events
        ]
        assert rvs == list(range(1, count + 1))


async def _stored_rv(hub: LiveHub, cluster: str, name: str, rv: int) -> bool:
    obj = await stored(hub, cluster, "ConfigMap", name)
    return obj is not None and obj["metadata"]["resourceVersion"] == str(rv)


async def test_a_cluster_asked_to_relist_is_unsynced_until_its_snapshot_ends(
    broker: Mosquitto, database_url: str
) -> None:
    pods = KindKey("v1", "Pod")
    async with (
        live_hub(broker_url=broker.url, database_url=database_url) as hub,
        RawAgent(broker.url, "drifted") as agent,
    ):
        await agent.hello("v1/Pod")
        await wait_until(lambda: known(hub, "drifted"), what="drifted known")
        assert "drifted" not in hub.hub.ingest.unsynced()
        await agent.send(MessageType.DIGEST, digest_data({pods: KindDigest(3, "not-ours")}))
        await wait_until(lambda: _asked(agent), what="a relist request")
        assert "drifted" in hub.hub.ingest.unsynced()
        chunk = snapshot_data("s1", pods, 0, True, 7, [pod("p", 7)])
        await agent.send(MessageType.SNAPSHOT, chunk)
        await wait_until(lambda: _synced(hub, "drifted"), what="the listing to end")


async def test_a_removed_cluster_is_not_waited_for(broker: Mosquitto, database_url: str) -> None:
    pods = KindKey("v1", "Pod")
    async with (
        live_hub(broker_url=broker.url, database_url=database_url) as hub,
        RawAgent(broker.url, "drifted") as agent,
    ):
        await agent.hello("v1/Pod")
        await wait_until(lambda: known(hub, "drifted"), what="drifted known")
        await agent.send(MessageType.DIGEST, digest_data({pods: KindDigest(3, "not-ours")}))
        await wait_until(lambda: _asked(agent), what="a relist request")
        assert "drifted" in hub.hub.ingest.unsynced()
        hub.hub.ingest.forget("drifted")
        assert "drifted" not in hub.hub.ingest.unsynced()


async def _asked(agent: RawAgent) -> bool:
    return bool(agent.resync_requests())


async def _synced(hub: LiveHub, cluster: str) -> bool:
    return cluster not in hub.hub.ingest.unsynced()
