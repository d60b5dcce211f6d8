"""What 10,000 clusters on one hub needed (issue #11, `bench/fleet_scale.py`): heartbeats
that share transactions and touch only what they change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub.feed import ChangeFeed
from app.hub.ingest import Ingest
from app.hub.registry import InMemoryRegistry
from app.informer.deltas import ClusterHello, ClusterOffline, ClusterSeen
from app.informer.objects import KindKey
from app.store.tables import clusters
from app.store.writer import InventoryWriter
from app.transport import cloudevents, topics
from app.transport.messages import MessageType


async def _no_resync(cluster: str, kinds: tuple[KindKey, ...]) -> None:
    pass


@asynccontextmanager
async def running(engine: AsyncEngine, linger_s: float) -> AsyncIterator[Ingest]:
    ingest = Ingest(
        source=topics.DEFAULT_SOURCE,
        writer=InventoryWriter(engine),
        feed=ChangeFeed(),
        registry=InMemoryRegistry("test"),
        request_resync=_no_resync,
        heartbeat_linger_s=linger_s,
    )
    loop = asyncio.ensure_future(ingest.run())
    try:
        yield ingest
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def message(cluster: str, type_: MessageType, data: dict[str, object]) -> tuple[str, bytes]:
    topic = topics.agent_events(topics.DEFAULT_SOURCE, cluster)
    return topic, cloudevents.encode(
        cloudevents.CloudEvent(type_, f"agent/{cluster}", cluster, data)
    )


async def test_heartbeats_arriving_one_by_one_share_transactions(engine: AsyncEngine) -> None:
    """2,000 heartbeats a second came one per transaction, and the hub ran out of CPU."""
    async with running(engine, linger_s=0.25) as ingest:
        handled = []
        for i in range(100):
            handled.append(
                asyncio.ensure_future(ingest.handle(*message(f"c-{i}", MessageType.HEARTBEAT, {})))
            )
            await asyncio.sleep(0.002)
        async with asyncio.timeout(10):
            await asyncio.gather(*handled)
        assert ingest.stats.messages == 100
        assert ingest.stats.batches <= 5


async def test_anything_but_a_heartbeat_ends_the_wait(engine: AsyncEngine) -> None:
    async with running(engine, linger_s=30) as ingest:
        beat = asyncio.ensure_future(ingest.handle(*message("c-1", MessageType.HEARTBEAT, {})))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        hello = {"kinds": [{"apiVersion": "v1", "kind": "Pod"}], "heartbeatSeconds": 5}
        async with asyncio.timeout(5):
            await ingest.handle(*message("c-2", MessageType.HELLO, hello))
            await beat
        assert time.monotonic() - started < 2


async def test_heartbeats_of_known_clusters_touch_only_their_liveness(engine: AsyncEngine) -> None:
    """A heartbeat updates `online` and `last_seen` alone (no read and rewrite of the whole
    row per heartbeat); one bringing a cluster back online is reported, one from a cluster
    the hub does not know asks it for everything, as before."""
    now = [100.0]
    writer = InventoryWriter(engine, clock=lambda: now[0])
    pods = (KindKey("v1", "Pod"),)
    await writer.apply(
        [
            ClusterHello("c1", {"env": "prod"}, pods, 5.0, "1"),
            ClusterHello("c2", {}, pods, 5.0, "1"),
        ]
    )
    await writer.apply([ClusterOffline("c2", "gone")])
    now[0] = 200.0
    applied = await writer.apply([ClusterSeen("c1"), ClusterSeen("c2"), ClusterSeen("c3")])
    assert {(s.name, s.online) for s in applied.clusters} == {("c2", True), ("c3", True)}
    assert applied.resync == {"c3": set()}
    async with engine.connect() as conn:
        rows = {r.name: r for r in await conn.execute(select(clusters))}
    assert {n: (r.online, r.last_seen) for n, r in rows.items()} == {
        "c1": (True, 200.0),
        "c2": (True, 200.0),
        "c3": (True, 200.0),
    }
    assert rows["c1"].labels == {"env": "prod"} and rows["c1"].kinds == ["v1/Pod"]
