"""A bad message never blocks a good one (issue 7): refused, recorded, and ingest goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from sqlalchemy import text

from app.broker import Mosquitto
from app.informer.objects import MAX_OBJECT_DEPTH
from app.transport.messages import MessageType
from tests.conftest import wait_until
from tests.harness import LiveHub, RawAgent, SseReader, live_hub
from tests.objects import pod
from tests.store.test_unusual_data import nul_config_map


def nested_pod(name: str, depth: int, rv: int) -> dict[str, Any]:
    obj = pod(name, rv)
    inner: dict[str, Any] = {}
    for _ in range(depth - 3):
        inner = {"a": inner}
    obj["spec"] = {"deep": inner}
    return obj


def config_map(name: str, rv: int) -> dict[str, Any]:
    return pod(name, rv, kind="ConfigMap")


async def stored(hub: LiveHub, cluster: str, kind: str, name: str) -> dict[str, Any] | None:
    response = await hub.http.get(f"/clusters/{cluster}/resources/{kind}/default/{name}")
    return response.json() if response.status_code == 200 else None


async def known(hub: LiveHub, cluster: str) -> bool:
    return (await hub.http.get(f"/clusters/{cluster}")).status_code == 200


async def test_nul_and_deep_objects_are_handled_and_the_next_cluster_is_not_delayed(
    broker: Mosquitto, database_url: str
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=database_url) as hub,
        RawAgent(broker.url, "bad-1") as bad,
        RawAgent(broker.url, "good-1") as good,
    ):
        await bad.hello("v1/Pod", "v1/ConfigMap")
        await good.hello("v1/ConfigMap")
        await wait_until(lambda: known(hub, "good-1"), what="good-1 known")
        async with hub.http.stream("GET", "/stream", params={"cluster": "good-1"}) as response:
            reader = SseReader(response)
            await reader.next(1)  # BOOKMARK
            await bad.events(("ADDED", nul_config_map(5)))
            await bad.events(("ADDED", nested_pod("deep", 300, 6)), ("ADDED", pod("fine", 7)))
            await bad.events(("ADDED", nested_pod("limit", MAX_OBJECT_DEPTH, 8)))
            sent = time.monotonic()
            await good.events(("ADDED", config_map("after", 9)))
            (change,) = await asyncio.wait_for(reader.next(1), 1.0)
            took = time.monotonic() - sent
        assert change["event"] == "ADDED" and took < 1.0
        assert orjson.loads(change["data"])["object"]["metadata"]["name"] == "after"
        await wait_until(lambda: _has(hub, "bad-1", "Pod", "limit"), what="deep-but-legal pod")
        assert await stored(hub, "bad-1", "ConfigMap", "cfg") == nul_config_map(5)
        assert await stored(hub, "bad-1", "Pod", "limit") == nested_pod(
            "limit", MAX_OBJECT_DEPTH, 8
        )
        assert await stored(hub, "bad-1", "Pod", "fine") == pod("fine", 7)
        assert await stored(hub, "bad-1", "Pod", "deep") is None
        refused = await _rejections(hub, cluster="bad-1")
        (deep,) = refused["items"]
        assert deep["reason"] == "bad_object" and deep["object"] == "Pod default/deep"
        assert f"nests deeper than {MAX_OBJECT_DEPTH} levels" in deep["detail"]
        assert deep["type"] == MessageType.WATCH_EVENTS
        assert refused["counts"] == {"bad_object": 1}
        metrics = (await hub.http.get("/metrics")).text
        assert 'ti_ingest_rejected_total{reason="bad_object"} 1' in metrics
        assert (await hub.get("/readyz"))["ready"] is True


async def _has(hub: LiveHub, cluster: str, kind: str, name: str) -> bool:
    return await stored(hub, cluster, kind, name) is not None


async def _rejections(hub: LiveHub, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = await hub.get("/rejections", **params)
    return result


@asynccontextmanager
async def refusing_poison(hub: LiveHub, database_url: str) -> AsyncIterator[None]:
    """A database trigger that refuses any object named `poison`: data the database will
    never take, as a NUL, an index row too large or a value out of range would be."""
    postgres = database_url.startswith("postgresql")
    create = (
        [
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
            "IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison refused' "
            "USING ERRCODE = '22000'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON resources "
            "FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ]
        if postgres
        else [
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON resources WHEN NEW.name = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
        ]
    )
    drop = ["DROP TRIGGER IF EXISTS refuse_poison" + (" ON resources" if postgres else "")]
    drop += ["DROP FUNCTION IF EXISTS refuse_poison()"] if postgres else []
    async with hub.hub.engine.begin() as conn:
        for sql in create:
            await conn.execute(text(sql))
    try:
        yield
    finally:
        async with hub.hub.engine.begin() as conn:
            for sql in drop:
                await conn.execute(text(sql))


async def test_an_object_the_database_refuses_is_isolated_down_to_itself(
    broker: Mosquitto, database_url: str
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=database_url) as hub,
        refusing_poison(hub, database_url),
        RawAgent(broker.url, "prod-1") as agent,
    ):
        await agent.hello("v1/ConfigMap")
        await agent.events(("ADDED", config_map("old", 1)))
        await wait_until(lambda: _has(hub, "prod-1", "ConfigMap", "old"), what="old stored")
        snapshot = {
            "snapshotId": "s1",
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "resourceVersion": "20",
            "chunk": 0,
            "last": True,
            "items": [config_map("a", 11), config_map("poison", 12), config_map("b", 13)],
        }
        await agent.send(MessageType.SNAPSHOT, snapshot)
        await agent.events(("ADDED", config_map("c", 21)), ("ADDED", config_map("poison", 22)))
        await agent.events(("ADDED", config_map("d", 23)))
        await wait_until(lambda: _has(hub, "prod-1", "ConfigMap", "d"), what="d stored")
        names = {
            i["metadata"]["name"] for i in (await hub.get("/clusters/prod-1/resources"))["items"]
        }
        assert names == {"a", "b", "c", "d"}  # `old` was swept: the snapshot still completed
        refused = await _rejections(hub, cluster="prod-1", reason="unstorable")
        assert [r["object"] for r in refused["items"]] == ["ConfigMap default/poison"] * 2
        assert "poison refused" in refused["items"][0]["detail"]
        # the refused watch event may have left an older version: the kind is relisted once
        await wait_until(
            lambda: _async(["v1/ConfigMap"] in agent.resync_requests()), what="relist asked"
        )
        assert agent.resync_requests().count(["v1/ConfigMap"]) == 1
        assert (await hub.get("/readyz"))["ready"] is True


async def _async(value: bool) -> bool:
    return value


async def test_the_cluster_page_lists_what_the_hub_refused(
    broker: Mosquitto, tmp_path: Any
) -> None:
    async with (
        live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub,
        RawAgent(broker.url, "bad-1") as bad,
    ):
        await bad.hello("v1/Pod")
        await bad.events(("ADDED", nested_pod("deep", 300, 1)), ("ADDED", pod("fine", 2)))
        await wait_until(lambda: _has(hub, "bad-1", "Pod", "fine"), what="fine stored")
        await wait_until(
            lambda: _async(bool(hub.hub.ingest.stats.rejected)), what="the refusal counted"
        )

        async def listed() -> bool:
            page = (await hub.http.get("/ui/clusters/bad-1")).text
            return "Refused messages" in page and "Pod default/deep" in page

        await wait_until(listed, what="the refusal on the cluster page")
        page = (await hub.http.get("/ui/clusters/bad-1")).text
        assert "bad_object" in page and "nests deeper than 200 levels" in page
        assert 'href="/rejections?cluster=bad-1"' in page
