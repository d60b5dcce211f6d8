"""The simulated cluster: valid objects, one resourceVersion counter, churn, determinism."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise

import pytest

from app.agent.sources.base import Listing
from app.agent.sources.sim import SimulatedCluster
from app.agent.sources.sim_shapes import CONFIG_MAP, DEPLOYMENT, NODE, POD, SERVICE
from app.informer.objects import (
    EventType,
    InvalidObject,
    KindKey,
    KubeObject,
    WatchEvent,
    object_ref,
)


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.listings: list[Listing] = []

    def event(self, event: WatchEvent) -> None:
        self.events.append(event)

    def listed(self, listing: Listing) -> None:
        self.listings.append(listing)


@asynccontextmanager
async def running(cluster: SimulatedCluster) -> AsyncIterator[RecordingSink]:
    """`cluster.run` in a task for the duration of the block, reporting to a fresh sink."""
    sink = RecordingSink()
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(cluster.run(sink))
        await asyncio.sleep(0)  # let run() attach the sink
        try:
            yield sink
        finally:
            task.cancel()


def static(objects: int = 300, seed: int | None = 1) -> SimulatedCluster:
    return SimulatedCluster(cluster="sim", objects=objects, churn_per_s=0, seed=seed)


async def all_items(cluster: SimulatedCluster) -> list[KubeObject]:
    return [item for kind in cluster.kinds for item in (await cluster.list(kind)).items]


async def test_every_object_is_a_valid_kubernetes_object() -> None:
    cluster = static()
    for kind in cluster.kinds:
        for item in (await cluster.list(kind)).items:
            ref = object_ref(item)
            assert (ref.api_version, ref.kind) == (kind.api_version, kind.kind)
            assert (ref.namespace == "") == (kind == NODE)
            assert item["metadata"]["creationTimestamp"].endswith("Z")


async def test_objects_have_the_shape_of_their_kind() -> None:
    cluster = static()
    pod = (await cluster.list(POD)).items[0]
    assert pod["spec"]["containers"][0]["image"]
    assert pod["spec"]["nodeName"]
    assert pod["status"]["phase"] in ("Running", "Pending")
    assert pod["metadata"]["labels"]["app"] in ("web", "api", "db", "cache", "worker")
    deployment = (await cluster.list(DEPLOYMENT)).items[0]
    assert deployment["spec"]["selector"]["matchLabels"]["app"]
    assert deployment["status"]["conditions"][0]["type"] == "Available"
    assert "clusterIP" in (await cluster.list(SERVICE)).items[0]["spec"]
    assert (await cluster.list(CONFIG_MAP)).items[0]["data"]
    node = (await cluster.list(NODE)).items[0]
    assert node["status"]["nodeInfo"]["kubeletVersion"]


async def test_names_are_unique_per_kind_and_namespace() -> None:
    cluster = static(objects=2000)
    for kind in cluster.kinds:
        items = (await cluster.list(kind)).items
        keys = {(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in items}
        assert len(keys) == len(items)


async def test_object_count_matches_the_target_and_stays_near_it_under_churn() -> None:
    cluster = static(objects=300)
    assert cluster.count() == 300
    assert cluster.count(POD) > cluster.count(DEPLOYMENT) > cluster.count(NODE) > 0
    cluster.mutate(5000)
    assert 240 <= cluster.count() <= 360
    assert len(await all_items(cluster)) == cluster.count()


async def test_listing_carries_the_current_resource_version() -> None:
    cluster = static()
    cluster.mutate(50)
    listing = await cluster.list(POD)
    assert listing.resource_version == cluster.resource_version
    assert all(object_ref(i).resource_version <= listing.resource_version for i in listing.items)


async def test_listed_items_are_copies() -> None:
    cluster = static()
    item = (await cluster.list(POD)).items[0]
    item["metadata"]["labels"]["app"] = "tampered"
    ref = object_ref(item)
    stored = cluster.get(POD, ref.namespace, ref.name)
    assert stored is not None
    assert stored["metadata"]["labels"]["app"] != "tampered"


async def test_resource_versions_strictly_increase_across_all_events() -> None:
    cluster = static()
    async with running(cluster) as sink:
        cluster.mutate(1000)
    versions = [event.ref.resource_version for event in sink.events]
    assert all(a < b for a, b in pairwise(versions))
    assert versions[-1] == cluster.resource_version
    assert {event.type for event in sink.events} == set(EventType)


async def test_mutate_reports_exactly_n_events() -> None:
    cluster = static()
    async with running(cluster) as sink:
        cluster.mutate(37)
    assert len(sink.events) == 37


async def test_delete_event_carries_a_newer_resource_version_than_the_object_had() -> None:
    cluster = static()
    pod = (await cluster.list(POD)).items[0]
    ref = object_ref(pod)
    async with running(cluster) as sink:
        assert cluster.delete(POD, ref.namespace, ref.name)
    [event] = sink.events
    assert event.type is EventType.DELETED
    assert event.ref.uid == ref.uid
    assert event.ref.resource_version > ref.resource_version
    assert cluster.get(POD, ref.namespace, ref.name) is None


async def test_delete_of_a_missing_object_returns_false_and_reports_nothing() -> None:
    cluster = static()
    before = cluster.resource_version
    async with running(cluster) as sink:
        assert not cluster.delete(POD, "default", "no-such-pod")
        assert not cluster.delete(KindKey("v1", "Secret"), "default", "x")
    assert sink.events == []
    assert cluster.resource_version == before


def configmap(value: str) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "web"},
        "data": {"value": value},
    }


async def test_apply_creates_then_updates() -> None:
    cluster = static()
    async with running(cluster) as sink:
        created = cluster.apply(configmap("a"))
        updated = cluster.apply(configmap("b"))
    assert [event.type for event in sink.events] == [EventType.ADDED, EventType.MODIFIED]
    assert created["metadata"]["uid"] == updated["metadata"]["uid"]
    assert object_ref(created).uid
    assert int(updated["metadata"]["resourceVersion"]) == cluster.resource_version
    assert cluster.get(CONFIG_MAP, "web", "settings") == updated
    assert updated["data"] == {"value": "b"}


async def test_apply_bumps_the_generation_only_when_the_spec_changes() -> None:
    cluster = static()
    deployment = (await cluster.list(DEPLOYMENT)).items[0]
    generation = deployment["metadata"]["generation"]
    deployment["metadata"]["labels"]["extra"] = "yes"
    assert cluster.apply(deployment)["metadata"]["generation"] == generation
    deployment["spec"]["replicas"] += 1
    assert cluster.apply(deployment)["metadata"]["generation"] == generation + 1


async def test_apply_rejects_an_object_without_a_name() -> None:
    cluster = static()
    nameless = configmap("a")
    del nameless["metadata"]["name"]
    with pytest.raises(InvalidObject):
        cluster.apply(nameless)


async def test_a_kind_nobody_watches_is_held_but_never_churned() -> None:
    cluster = static()
    secret = configmap("a") | {"kind": "Secret"}
    stored = cluster.apply(secret)  # workloads may bring any kind
    secrets = KindKey("v1", "Secret")
    assert secrets not in cluster.kinds
    cluster.mutate(500)
    assert cluster.get(secrets, stored["metadata"]["namespace"], "settings") == stored


async def test_churn_leaves_applied_objects_alone() -> None:
    cluster = SimulatedCluster(cluster="sim", objects=5, churn_per_s=0, seed=3, kinds=[CONFIG_MAP])
    applied = cluster.apply(configmap("a"))
    cluster.mutate(2000)
    assert cluster.get(CONFIG_MAP, "web", "settings") == applied


async def test_changes_without_an_active_run_are_reported_nowhere() -> None:
    cluster = static()
    async with running(cluster) as sink:
        pass
    cluster.mutate(10)
    assert sink.events == []


async def test_unknown_kinds_get_a_generic_shape() -> None:
    widget = KindKey("example.com/v1", "Widget")
    cluster = SimulatedCluster(cluster="sim", objects=20, churn_per_s=0, kinds=[widget])
    items = (await cluster.list(widget)).items
    assert len(items) == 20
    assert all(object_ref(item).kind == "Widget" for item in items)
    async with running(cluster) as sink:
        cluster.mutate(50)
    assert len(sink.events) == 50


async def test_run_churns_at_roughly_the_requested_rate_until_cancelled() -> None:
    cluster = SimulatedCluster(cluster="sim", objects=300, churn_per_s=2000, seed=5)
    async with running(cluster) as sink:
        await asyncio.sleep(0.5)
    assert len(sink.events) >= 300
    reported = len(sink.events)
    await asyncio.sleep(0.1)
    assert len(sink.events) == reported


async def test_run_never_reports_a_listing() -> None:
    cluster = SimulatedCluster(cluster="sim", objects=50, churn_per_s=500)
    async with running(cluster) as sink:
        await asyncio.sleep(0.1)
    assert sink.listings == []


async def test_only_one_run_at_a_time() -> None:
    cluster = static()
    async with running(cluster):
        with pytest.raises(RuntimeError, match="already running"):
            await cluster.run(RecordingSink())


async def test_seeded_clusters_are_identical() -> None:
    first, second = static(seed=42), static(seed=42)
    assert await all_items(first) == await all_items(second)
    first.mutate(500)
    second.mutate(500)
    assert await all_items(first) == await all_items(second)
    assert await all_items(first) != await all_items(static(seed=43))
