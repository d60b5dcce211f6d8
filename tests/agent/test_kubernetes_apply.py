"""KubernetesSource as a WorkloadTarget: server-side apply, get, delete and find by label,
against the in-memory API server (see fake_kube_api), and the WorkloadRunner driving it."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from app.agent.sources.base import WorkloadTarget
from app.agent.sources.kube_api import KubeApi, KubeApiError, UnknownKind
from app.agent.sources.kube_write import APPLY_PATCH
from app.agent.sources.kubernetes import FIELD_MANAGER, KubernetesSource
from app.agent.workloads import OWNER_LABEL, WorkloadRunner
from app.informer.objects import EventType, InvalidObject, KindKey
from app.transport.messages import WorkloadApply, WorkloadRemove, WorkloadStatus

from .fake_kube_api import FakeKubeApi
from .test_kubernetes_source import RecordingSink, running, wait_until

POD = KindKey("v1", "Pod")
CONFIG_MAP = KindKey("v1", "ConfigMap")
NODE = KindKey("v1", "Node")
DEPLOYMENT = KindKey("apps/v1", "Deployment")
WIDGET = KindKey("v1", "Widget")


def config_map(name: str, namespace: str | None = "default", **fields: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta} | fields


def deployment(name: str, image: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": image}]}}},
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubeApi]:
    async with FakeKubeApi.serving() as api:
        yield api


@pytest.fixture
async def api_client(fake: FakeKubeApi) -> AsyncIterator[ApiClient]:
    async with ApiClient(Configuration(host=fake.url)) as client:
        yield client


@pytest.fixture
def source(api_client: ApiClient) -> KubernetesSource:
    return KubernetesSource(kinds=[POD, CONFIG_MAP], api_client=api_client)


def test_the_source_is_a_workload_target(source: KubernetesSource) -> None:
    assert isinstance(source, WorkloadTarget)  # what makes an Agent deliver workloads to it


async def test_apply_creates_the_object_as_its_field_manager(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    manifest = config_map("settings", data={"mode": "fast"})
    original = copy.deepcopy(manifest)

    stored = await source.apply_object(manifest)

    assert manifest == original  # the caller's object is left alone
    assert (stored["apiVersion"], stored["kind"]) == ("v1", "ConfigMap")
    assert stored["data"] == {"mode": "fast"}
    assert stored["metadata"]["labels"] == {"app": "settings"}
    assert stored["metadata"]["uid"] and int(stored["metadata"]["resourceVersion"]) == fake.rv
    assert fake.get("configmaps", "settings") == stored
    (managed,) = stored["metadata"]["managedFields"]
    assert (managed["manager"], managed["operation"]) == (FIELD_MANAGER, "Apply")
    ((plural, query, content_type),) = fake.apply_requests
    assert plural == "configmaps"
    assert query == {"fieldManager": "transport-informer", "force": "true"}
    assert content_type == APPLY_PATCH == "application/apply-patch+yaml"


async def test_apply_again_replaces_what_changed(fake: FakeKubeApi, api_client: ApiClient) -> None:
    source = KubernetesSource(kinds=[DEPLOYMENT], api_client=api_client, field_manager="ops")
    first = await source.apply_object(deployment("web", "web:1", replicas=3))

    second = await source.apply_object(deployment("web", "web:2"))
    unchanged = await source.apply_object(deployment("web", "web:2"))

    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    first_rv = int(first["metadata"]["resourceVersion"])
    assert int(second["metadata"]["resourceVersion"]) > first_rv
    assert second["spec"] == deployment("web", "web:2")["spec"]  # replaced, not merged
    assert unchanged == second  # an apply that changes nothing writes nothing
    assert [m["manager"] for m in second["metadata"]["managedFields"]] == ["ops"]
    assert fake.get("deployments", "web", "shop") == second


async def test_apply_places_objects_by_scope(fake: FakeKubeApi, source: KubernetesSource) -> None:
    in_default = await source.apply_object(config_map("no-namespace", namespace=None))
    node_meta = {"name": "n1", "namespace": "x"}  # meaningless for a cluster-scoped kind
    node = await source.apply_object({"apiVersion": "v1", "kind": "Node", "metadata": node_meta})

    assert in_default["metadata"]["namespace"] == "default"
    assert fake.get("configmaps", "no-namespace", "default") is not None
    assert "namespace" not in node["metadata"]
    assert await source.get_object(CONFIG_MAP, "", "no-namespace") == in_default
    assert await source.get_object(NODE, "ignored", "n1") == node


async def test_apply_leaves_server_owned_metadata_out(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    stored = await source.apply_object(config_map("settings", data={"a": "1"}))
    fake.delete("configmaps", "settings")
    exported = copy.deepcopy(stored) | {"data": {"a": "2"}}  # uid, managedFields and all

    recreated = await source.apply_object(exported)

    assert recreated["metadata"]["uid"] != stored["metadata"]["uid"]
    assert recreated["data"] == {"a": "2"}


async def test_get_returns_the_object_or_none(fake: FakeKubeApi, source: KubernetesSource) -> None:
    fake.create("pods", "web", namespace="shop", spec={"nodeName": "n1"})

    pod = await source.get_object(POD, "shop", "web")

    assert pod is not None
    assert (pod["apiVersion"], pod["kind"], pod["spec"]) == ("v1", "Pod", {"nodeName": "n1"})
    assert await source.get_object(POD, "default", "web") is None
    assert await source.get_object(POD, "shop", "missing") is None
    assert await source.get_object(WIDGET, "shop", "web") is None  # a kind not served


async def test_delete_removes_the_object_once(fake: FakeKubeApi, source: KubernetesSource) -> None:
    await source.apply_object(config_map("settings"))

    assert await source.delete_object(CONFIG_MAP, "default", "settings") is True
    assert await source.delete_object(CONFIG_MAP, "default", "settings") is False
    assert await source.delete_object(WIDGET, "default", "settings") is False

    assert fake.get("configmaps", "settings") is None
    assert await source.get_object(CONFIG_MAP, "default", "settings") is None
    assert [query for _, query in fake.delete_requests] == [{"propagationPolicy": "Background"}] * 2


async def test_labelled_finds_configured_and_applied_kinds_in_every_namespace(
    fake: FakeKubeApi, api_client: ApiClient
) -> None:
    source = KubernetesSource(kinds=[POD, WIDGET], api_client=api_client, page_size=1)
    fake.create("pods", "a", namespace="one", metadata={"name": "a", "namespace": "one"})
    labelled = {"labels": {"team": "red", "tier": "web"}}
    fake.create("pods", "b", namespace="two", metadata={"name": "b", "namespace": "two"} | labelled)
    fake.create("pods", "c", namespace="one", metadata={"name": "c", "namespace": "one"} | labelled)
    fake.create("deployments", "not-configured-nor-applied", metadata={"name": "x"} | labelled)
    await source.apply_object(config_map("applied") | {"metadata": {"name": "d"} | labelled})
    await source.apply_object(config_map("other-team"))

    found = await source.labelled("team", "red")

    assert sorted(found, key=str) == sorted(
        [(POD, "two", "b"), (POD, "one", "c"), (CONFIG_MAP, "default", "d")], key=str
    )
    assert {plural for plural, _ in fake.list_requests} == {"pods", "configmaps"}
    assert {query.get("labelSelector") for _, query in fake.list_requests} == {"team=red"}
    assert await source.labelled("team", "blue") == []


async def test_a_watch_sees_applied_objects_come_change_and_go(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    sink = RecordingSink()
    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 2)
        await source.apply_object(config_map("settings", data={"v": "1"}))
        await source.apply_object(config_map("settings", data={"v": "2"}))
        await source.delete_object(CONFIG_MAP, "default", "settings")
        await wait_until(lambda: len(sink.events) == 3)

    assert sink.event_summary() == [
        (EventType.ADDED, "settings"),
        (EventType.MODIFIED, "settings"),
        (EventType.DELETED, "settings"),
    ]
    assert sink.events[1].object["data"] == {"v": "2"}
    assert sink.events[0].object["metadata"]["managedFields"][0]["manager"] == FIELD_MANAGER


async def test_apply_of_a_kind_the_server_does_not_serve_says_so(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    widget = {"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns"}}

    with pytest.raises(UnknownKind) as raised:
        await source.apply_object(widget)

    assert raised.value.status == 404
    assert str(raised.value) == "404: applying Widget ns/w: the server does not serve v1/Widget"
    assert fake.apply_requests == []
    assert await source.labelled(OWNER_LABEL, "anything") == []  # nothing was applied


async def test_apply_the_server_refuses_raises_its_status_message(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    with pytest.raises(KubeApiError) as raised:
        await source.apply_object(config_map("Not_A_Name"))

    assert (raised.value.status, raised.value.reason) == (422, "Invalid")
    assert "applying ConfigMap default/Not_A_Name" in str(raised.value)
    assert 'ConfigMap "Not_A_Name" is invalid: metadata.name' in str(raised.value)
    assert fake.get("configmaps", "Not_A_Name") is None
    with pytest.raises(InvalidObject, match=r"needs a metadata\.name"):
        await source.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})


async def test_the_fake_refuses_applies_as_a_real_server_does(
    fake: FakeKubeApi, api_client: ApiClient
) -> None:
    api = KubeApi(api_client)
    path = "/api/v1/namespaces/default/configmaps/settings"
    body = config_map("settings")

    with pytest.raises(KubeApiError) as no_manager:
        await api.request_json("PATCH", path, body=body, content_type=APPLY_PATCH)
    with pytest.raises(KubeApiError) as not_apply:
        await api.request_json(
            "PATCH", path, [("fieldManager", "x")], body=body, content_type="application/json"
        )
    with pytest.raises(KubeApiError) as wrong_name:
        await api.request_json(
            "PATCH", path + "-2", [("fieldManager", "x")], body=body, content_type=APPLY_PATCH
        )
    with pytest.raises(KubeApiError) as cluster_path:
        await api.get_json("/api/v1/configmaps/settings")  # a namespaced kind

    assert (no_manager.value.status, no_manager.value.reason) == (422, "Invalid")
    assert "fieldManager: Required value" in str(no_manager.value)
    assert not_apply.value.status == 415
    assert wrong_name.value.status == 400
    assert cluster_path.value.status == 404
    assert fake.get("configmaps", "settings") is None


async def test_the_workload_runner_applies_repairs_and_removes_through_the_source(
    fake: FakeKubeApi, source: KubernetesSource
) -> None:
    statuses: list[WorkloadStatus] = []
    runner = WorkloadRunner(source, statuses.append, drift_s=0.05)
    manifests = [config_map("settings", data={"v": "1"}), deployment("web", "web:1")]

    await runner.apply(WorkloadApply("shop", 1, manifests, "ServerSideApply", "Foreground", []))

    settings, web = fake.get("configmaps", "settings"), fake.get("deployments", "web", "shop")
    assert settings is not None and web is not None
    assert settings["metadata"]["labels"] == {"app": "settings", OWNER_LABEL: "shop"}
    assert web["metadata"]["labels"] == {OWNER_LABEL: "shop"}
    assert web["metadata"]["managedFields"][0]["manager"] == FIELD_MANAGER
    applied = {c["type"]: c["status"] for c in statuses[-1].conditions}
    assert (statuses[-1].version, statuses[-1].error) == (1, "")
    assert applied == {"Applied": "True", "Available": "True", "Degraded": "False"}

    async with asyncio.TaskGroup() as tasks:
        drift_loop = tasks.create_task(runner.run())
        fake.delete("configmaps", "settings")
        fake.modify("deployments", "web", "shop", spec={"replicas": 9})
        await wait_until(lambda: fake.get("configmaps", "settings") is not None)
        await wait_until(
            lambda: (fake.get("deployments", "web", "shop") or {}).get("spec") == web["spec"]
        )
        drift_loop.cancel()
    restored = fake.get("configmaps", "settings")
    assert restored is not None and restored["data"] == {"v": "1"}
    assert restored["metadata"]["uid"] != settings["metadata"]["uid"]

    await runner.remove(WorkloadRemove("shop", 1, "Foreground"))

    assert fake.get("configmaps", "settings") is None
    assert fake.get("deployments", "web", "shop") is None
    assert await source.labelled(OWNER_LABEL, "shop") == []
    assert (statuses[-1].workload, statuses[-1].removed) == ("shop", True)
