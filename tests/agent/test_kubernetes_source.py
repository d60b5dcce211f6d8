"""KubernetesSource against an in-memory API server (see fake_kube_api)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from app.agent.sources.base import Listing
from app.agent.sources.kube_api import UnknownKind
from app.agent.sources.kubernetes import KubernetesSource
from app.backoff import Backoff
from app.informer.objects import EventType, KindKey, WatchEvent

from .fake_kube_api import FakeKubeApi

POD = KindKey("v1", "Pod")
CONFIG_MAP = KindKey("v1", "ConfigMap")
NODE = KindKey("v1", "Node")
DEPLOYMENT = KindKey("apps/v1", "Deployment")


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.listings: list[Listing] = []

    def event(self, event: WatchEvent) -> None:
        self.events.append(event)

    def listed(self, listing: Listing) -> None:
        self.listings.append(listing)

    def listings_of(self, kind: KindKey) -> list[Listing]:
        return [listing for listing in self.listings if listing.kind == kind]

    def event_summary(self) -> list[tuple[EventType, str]]:
        return [(event.type, event.ref.name) for event in self.events]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(source: KubernetesSource, sink: RecordingSink) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(source.run(sink))
        try:
            yield
        finally:
            task.cancel()


def names(listing: Listing) -> set[str]:
    return {item["metadata"]["name"] for item in listing.items}


@pytest.fixture
async def fake() -> AsyncIterator[FakeKubeApi]:
    async with FakeKubeApi.serving() as api:
        yield api


@pytest.fixture
async def api_client(fake: FakeKubeApi) -> AsyncIterator[ApiClient]:
    async with ApiClient(Configuration(host=fake.url)) as client:
        yield client


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


async def test_first_listing_of_every_kind_is_reported(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    fake.create("pods", "web", namespace="default")
    fake.create("pods", "dns", namespace="kube-system")
    fake.create("nodes", "node-1")
    fake.create("deployments", "web")
    source = KubernetesSource(kinds=[POD, NODE, DEPLOYMENT], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(sink.listings) == 3)

    (pods,) = sink.listings_of(POD)
    assert names(pods) == {"web", "dns"}
    assert pods.resource_version == fake.rv
    assert {(item["apiVersion"], item["kind"]) for item in pods.items} == {("v1", "Pod")}
    (nodes,) = sink.listings_of(NODE)
    assert names(nodes) == {"node-1"}
    assert "namespace" not in nodes.items[0]["metadata"]
    (deployments,) = sink.listings_of(DEPLOYMENT)
    assert deployments.items[0]["apiVersion"] == "apps/v1"
    assert sink.events == []


async def test_list_pages_through_limit_and_continue(
    fake: FakeKubeApi, api_client: ApiClient
) -> None:
    for i in range(5):
        fake.create("configmaps", f"cm-{i}")
    source = KubernetesSource(kinds=[CONFIG_MAP], api_client=api_client, page_size=2)

    listing = await source.list(CONFIG_MAP)

    assert sorted(names(listing)) == [f"cm-{i}" for i in range(5)]
    assert listing.resource_version == fake.rv
    queries = [query for plural, query in fake.list_requests if plural == "configmaps"]
    assert [query["limit"] for query in queries] == ["2", "2", "2"]
    assert [("continue" in query) for query in queries] == [False, True, True]


async def test_list_starts_over_when_its_continue_token_expires(
    fake: FakeKubeApi, api_client: ApiClient
) -> None:
    for i in range(5):
        fake.create("configmaps", f"cm-{i}")
    source = KubernetesSource(kinds=[CONFIG_MAP], api_client=api_client, page_size=2)
    fake.expire_next_continue()

    listing = await source.list(CONFIG_MAP)

    assert len(listing.items) == 5
    assert sorted(names(listing)) == [f"cm-{i}" for i in range(5)]
    assert len(fake.list_requests) == 2 + 3  # first page, expired token, then all three pages


async def test_list_of_a_kind_the_server_does_not_serve_raises(api_client: ApiClient) -> None:
    source = KubernetesSource(kinds=[KindKey("v1", "Widget")], api_client=api_client)

    with pytest.raises(UnknownKind):
        await source.list(KindKey("v1", "Widget"))


async def test_changes_after_the_listing_arrive_as_events_in_order(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    source = KubernetesSource(kinds=[POD, CONFIG_MAP], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 2)
        fake.create("pods", "web", labels={"app": "web"})
        fake.create("configmaps", "settings")
        fake.modify("pods", "web", spec={"nodeName": "node-1"})
        fake.delete("pods", "web")
        await wait_until(lambda: len(sink.events) == 4)

    pod_events = [event for event in sink.events if event.ref.kind == "Pod"]
    assert [event.type for event in pod_events] == [
        EventType.ADDED,
        EventType.MODIFIED,
        EventType.DELETED,
    ]
    versions = [event.ref.resource_version for event in pod_events]
    assert versions == sorted(versions)
    assert pod_events[1].object["spec"] == {"nodeName": "node-1"}
    assert len(sink.listings) == 2


async def test_watch_ended_by_the_server_resumes_without_relisting(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        fake.create("pods", "web")
        fake.end_watches()
        await wait_until(lambda: len(fake.watch_requests) == 2)
        fake.create("pods", "api")
        await wait_until(lambda: len(sink.events) == 2)

    assert sink.event_summary() == [(EventType.ADDED, "web"), (EventType.ADDED, "api")]
    assert len(sink.listings) == 1
    assert fake.watch_requests[1] == ("pods", sink.events[0].ref.resource_version)


async def test_bookmark_moves_the_resume_point(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        fake.create("configmaps", "unwatched")  # moves the global resourceVersion
        bookmark_rv = fake.bookmark()
        fake.end_watches()
        await wait_until(lambda: len(fake.watch_requests) == 2)

    assert fake.watch_requests[1] == ("pods", bookmark_rv)
    assert bookmark_rv > sink.listings[0].resource_version
    assert sink.events == []


async def test_expired_watch_relists_without_objects_deleted_meanwhile(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    fake.create("pods", "web")
    fake.create("pods", "doomed")
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        with fake.watches_paused():
            fake.delete("pods", "doomed")
            fake.expire_watches()
        await wait_until(lambda: len(sink.listings) == 2)
        fake.create("pods", "api")
        await wait_until(lambda: len(sink.events) == 1)

    first, relisted = sink.listings
    assert names(first) == {"web", "doomed"}
    assert names(relisted) == {"web"}
    assert relisted.resource_version > first.resource_version
    assert sink.event_summary() == [(EventType.ADDED, "api")]


async def test_watch_refused_with_http_410_relists(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    fake.create("pods", "doomed")
    fake.expired_as_http = True
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        with fake.watches_paused():
            fake.delete("pods", "doomed")
            fake.compact()
            await fake.restart()
        await wait_until(lambda: len(sink.listings) == 2)

    assert names(sink.listings[1]) == set()
    assert sink.events == []


async def test_source_reconnects_after_the_server_restarts(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        fake.create("pods", "before")
        await wait_until(lambda: len(sink.events) == 1)
        await fake.restart()
        fake.create("pods", "after")
        await wait_until(lambda: len(sink.events) == 2)

    assert sink.event_summary() == [(EventType.ADDED, "before"), (EventType.ADDED, "after")]
    assert len(sink.listings) == 1
    assert fake.watch_requests[-1] == ("pods", sink.events[0].ref.resource_version)


async def test_invalid_objects_are_skipped(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    def invalid(name: str) -> dict[str, object]:
        meta = {"name": name, "namespace": "default", "uid": name, "resourceVersion": "abc"}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}

    fake.create("pods", "valid-listed")
    fake.put_raw("pods", invalid("invalid-listed"))
    source = KubernetesSource(kinds=[POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(fake.watch_requests) == 1)
        fake.put_raw("pods", invalid("invalid-watched"))
        fake.create("pods", "valid-watched")
        await wait_until(lambda: len(sink.events) == 1)

    assert names(sink.listings[0]) == {"valid-listed"}
    assert sink.event_summary() == [(EventType.ADDED, "valid-watched")]
    assert len(fake.watch_requests) == 1


async def test_a_kind_the_server_does_not_serve_does_not_stop_the_others(
    fake: FakeKubeApi, api_client: ApiClient, sink: RecordingSink
) -> None:
    fake.create("pods", "web")
    source = KubernetesSource(kinds=[KindKey("v1", "Widget"), POD], api_client=api_client)

    async with running(source, sink):
        await wait_until(lambda: len(sink.listings) == 1)

    assert names(sink.listings[0]) == {"web"}


async def test_from_kubeconfig_sends_the_configured_token(
    fake: FakeKubeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
        "users": [{"name": "agent", "user": {"token": "s3cret"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_bytes(orjson.dumps(kubeconfig))  # JSON is YAML
    fake.create("pods", "web")

    async with KubernetesSource.from_kubeconfig(str(path), [POD]) as source:
        listing = await source.list(POD)

    assert names(listing) == {"web"}
    assert fake.authorizations == ["Bearer s3cret"]


def test_backoff_doubles_up_to_its_cap_with_jitter_and_resets() -> None:
    backoff = Backoff(initial_s=1.0, cap_s=8.0)

    delays = [backoff.next_delay() for _ in range(6)]
    backoff.reset()

    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert nominal / 2 <= delay <= nominal
    assert backoff.next_delay() <= 1.0
