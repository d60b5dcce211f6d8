"""A token scoped to `env=dev` sees only dev clusters, everywhere: REST, streams, pages,
workloads, and places only on them."""

from __future__ import annotations

import orjson

from app.store import workloads as store
from app.store.records import ChangeRecord, ClusterStatus
from tests.conftest import wait_until
from tests.harness import LiveHub, SseReader
from tests.objects import pod

PLACED = {
    "name": "dev-web",
    "manifests": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}}
    ],
    "placement": {"labelSelector": "region=eu", "clusters": ["prod-1"]},
}


async def test_a_scoped_token_sees_only_its_clusters_in_the_api(fleet_hub: LiveHub) -> None:
    dev = await fleet_hub.token("dev", "viewer", clusters="env=dev")
    async with fleet_hub.client(dev) as http:
        clusters = (await http.get("/clusters")).json()["items"]
        assert [c["name"] for c in clusters] == ["dev-1"]
        for path in (
            "/clusters/prod-1",
            "/clusters/prod-1/resources",
            "/clusters/prod-1/resources/Pod/default/web-prod",
        ):
            missing = await http.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["detail"] == "unknown cluster 'prod-1'"  # as if none
        assert (await http.get("/clusters/nowhere")).json()["detail"] == "unknown cluster 'nowhere'"
        items = (await http.get("/resources")).json()["items"]
        assert {i["cluster"] for i in items} == {"dev-1"} and len(items) == 2
        web = (await http.get("/resources", params={"labelSelector": "app=web"})).json()
        assert [i["metadata"]["name"] for i in web["items"]] == ["web-dev"]
        assert (await http.get("/rejections")).json()["counts"] == {}
        assert (await http.get("/clusters/dev-1/resources/Pod/default/web-dev")).status_code == 200
    everything = (await fleet_hub.get("/resources"))["items"]
    assert {i["cluster"] for i in everything} == {"dev-1", "prod-1"}  # the admin's view


async def test_a_scoped_stream_carries_only_its_clusters(fleet_hub: LiveHub) -> None:
    dev = await fleet_hub.token("dev", "viewer", clusters="env=dev")
    feed = fleet_hub.hub.feed
    async with (
        fleet_hub.client(dev) as http,
        http.stream("GET", "/stream", params={"resourceVersion": "0"}) as response,
    ):
        reader = SseReader(response)
        replayed = await reader.next(2)
        assert {orjson.loads(e["data"])["cluster"] for e in replayed} == {"dev-1"}
        await wait_until(lambda: _subscribed(fleet_hub), what="stream subscribed")
        feed.publish(
            [
                ClusterStatus("prod-1", False, 1.0),
                _change(1000, "prod-1", "secret-prod"),
                ClusterStatus("dev-1", False, 1.0),
                _change(1001, "dev-1", "new-dev"),
            ]
        )
        live = await reader.next(2)
    assert [(e["event"], orjson.loads(e["data"])["cluster"]) for e in live] == [
        ("CLUSTER", "dev-1"),
        ("ADDED", "dev-1"),
    ]


async def _subscribed(hub: LiveHub) -> bool:
    return hub.hub.feed.subscribers >= 1  # this stream (the fleet pulse only observes)


def _change(revision: int, cluster: str, name: str) -> ChangeRecord:
    body = pod(name, revision)
    return ChangeRecord(revision, cluster, "ADDED", "v1", "Pod", "default", name, body)


async def test_a_scoped_principal_never_sees_prod_on_a_page(fleet_hub: LiveHub) -> None:
    dev = await fleet_hub.token("dev", "viewer", clusters="env=dev")
    async with fleet_hub.client(dev) as http:
        for path in ("/", "/ui/events", "/ui/workloads", "/ui/clusters/dev-1"):
            page = await http.get(path)
            assert page.status_code == 200, path
            assert "prod-1" not in page.text and "web-prod" not in page.text, path
        for path in ("/ui/clusters/prod-1", "/ui/clusters/prod-1/Pod/default/web-prod"):
            assert (await http.get(path)).status_code == 404, path
        async with http.stream("GET", "/ui/stream/fleet") as response:
            pulse = orjson.loads((await SseReader(response).next(1))[0]["data"])
        assert [r["name"] for r in pulse["rows"]] == ["dev-1"]
        assert pulse["summary"]["clusters"] == 1
        async with http.stream("GET", "/ui/stream/fleet", params={"q": "prod"}) as response:
            pulse = orjson.loads((await SseReader(response).next(1))[0]["data"])
        assert pulse["rows"] == [] and pulse["summary"]["clusters"] == 0
    async with fleet_hub.http.stream("GET", "/ui/stream/fleet") as response:
        pulse = orjson.loads((await SseReader(response).next(1))[0]["data"])
    assert sorted(r["name"] for r in pulse["rows"]) == ["dev-1", "prod-1"]


async def test_a_scoped_operator_places_only_on_its_clusters(fleet_hub: LiveHub) -> None:
    dev = await fleet_hub.token("dev-op", "operator", clusters="env=dev")
    async with fleet_hub.client(dev) as http:
        preview = (await http.post("/placements/preview", json=PLACED["placement"])).json()
        assert preview == {"clusters": ["dev-1"], "warnings": ["unknown clusters: prod-1"]}
        created = await http.post("/workloads", json=PLACED)
        assert created.status_code == 201 and created.json()["clusterScope"] == "env=dev"

        async def delivered() -> bool:
            return bool(await store.deliveries_of(fleet_hub.hub.engine, "dev-web"))

        await wait_until(delivered, what="deliveries")
        rows = await store.deliveries_of(fleet_hub.hub.engine, "dev-web")
        assert [r.cluster for r in rows] == ["dev-1"]
        # a workload of another scope does not exist for this token
        other = {**PLACED, "name": "everywhere", "placement": {"labelSelector": "region=eu"}}
        assert (await fleet_hub.http.post("/workloads", json=other)).status_code == 201
        assert (await http.get("/workloads/everywhere")).status_code == 404
        assert (await http.delete("/workloads/everywhere")).status_code == 404
        assert (await http.put("/workloads/everywhere", json=other)).status_code == 404
        assert [w["name"] for w in (await http.get("/workloads")).json()["items"]] == ["dev-web"]

        async def both() -> bool:
            return len(await store.deliveries_of(fleet_hub.hub.engine, "everywhere")) == 2

        await wait_until(both, what="the admin's workload placed on both")
    admin_view = await fleet_hub.get("/workloads/everywhere")
    assert sorted(c["cluster"] for c in admin_view["clusters"]) == ["dev-1", "prod-1"]
