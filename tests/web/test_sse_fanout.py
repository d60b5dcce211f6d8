"""`GET /stream` at many streams: each change is encoded once per process, and the changes
waiting for a stream go out in one write."""

from __future__ import annotations

import asyncio
import re

from app.access.roles import ClusterScope
from app.informer.selectors import FieldSelector, LabelSelector
from app.store.queries import ResourceQuery
from app.store.records import ChangeRecord
from app.web.live import RenderCache
from app.web.sse import encoded_change, stream_events
from tests.harness import LiveHub
from tests.objects import pod

IDS = re.compile(rb"^id: (\d+)\r?$", re.M)


def _change(revision: int, cluster: str, name: str) -> ChangeRecord:
    body = pod(name, revision)
    return ChangeRecord(revision, cluster, "ADDED", "v1", "Pod", "default", name, body)


async def test_changes_waiting_for_a_stream_go_out_in_one_write(two_events_hub: LiveHub) -> None:
    hub = two_events_hub.hub
    events = stream_events(hub, RenderCache[bytes](), ResourceQuery(), None)
    try:
        await anext(events)  # the BOOKMARK: subscribed by now
        hub.feed.publish([_change(6, "c1", "a"), _change(7, "c1", "b"), _change(8, "c2", "c")])
        chunk = await asyncio.wait_for(anext(events), 5)
    finally:
        await events.aclose()
    assert isinstance(chunk, bytes)
    assert IDS.findall(chunk) == [b"6", b"7", b"8"]


async def test_a_change_is_encoded_once_for_every_stream_that_sends_it(
    two_events_hub: LiveHub,
) -> None:
    hub = two_events_hub.hub
    cache = RenderCache[bytes]()
    streams = [stream_events(hub, cache, ResourceQuery(), None) for _ in range(3)]
    change = _change(6, "c1", "a")
    try:
        for stream in streams:
            await anext(stream)
        hub.feed.publish([change])
        sent = [await asyncio.wait_for(anext(s), 5) for s in streams]
    finally:
        for stream in streams:
            await stream.aclose()

    def encode_again(_: ChangeRecord) -> bytes:
        raise AssertionError("the change was encoded again")

    cached = cache.get("sse", change, encode_again)
    assert sent == [cached] * 3 and cached == encoded_change(change)


def test_only_a_query_without_filters_or_scope_admits_everything() -> None:
    assert ResourceQuery().admits_everything
    narrowed = [
        ResourceQuery(cluster="c1"),
        ResourceQuery(kind="Pod"),
        ResourceQuery(namespace="default"),
        ResourceQuery(labels=LabelSelector.parse("app=web")),
        ResourceQuery(fields=FieldSelector.parse("metadata.name=x")),
        ResourceQuery(name_contains="x"),
        ResourceQuery(scope=ClusterScope.parse("env=dev")),
    ]
    assert not any(q.admits_everything for q in narrowed)
