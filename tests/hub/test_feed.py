"""The change feed: a published batch reaches each subscriber at once, filtered, in order,
within its bound; a subscriber past its bound is dropped, not the feed slowed."""

from __future__ import annotations

import asyncio

from app.hub.feed import ChangeFeed, FeedItem
from app.store.records import ChangeRecord, ClusterStatus
from tests.objects import pod


def _change(revision: int, cluster: str) -> ChangeRecord:
    name = f"p{revision}"
    return ChangeRecord(revision, cluster, "ADDED", "v1", "Pod", "default", name, pod(name, 1))


async def test_a_batch_is_taken_at_once_in_publish_order() -> None:
    feed = ChangeFeed()
    batch = [_change(1, "a"), ClusterStatus("b", True, 1.0), _change(2, "b")]
    with feed.subscribe(None) as everything:
        waiting = asyncio.ensure_future(everything.take(200))
        await asyncio.sleep(0)
        feed.publish(batch)
        assert await asyncio.wait_for(waiting, 5) == batch


async def test_each_subscriber_gets_only_what_it_accepts() -> None:
    feed = ChangeFeed()
    with (
        feed.subscribe(lambda i: isinstance(i, ChangeRecord) and i.cluster == "a") as only_a,
        feed.subscribe(None) as everything,
    ):
        feed.publish([_change(1, "a"), _change(2, "b"), _change(3, "a")])
        assert [c.revision for c in await only_a.take(200)] == [1, 3]
        assert len(await everything.take(200)) == 3


async def test_take_returns_at_most_what_it_is_asked_for() -> None:
    feed = ChangeFeed()
    with feed.subscribe(None) as sub:
        feed.publish([_change(r, "a") for r in range(1, 6)])
        assert [c.revision for c in await sub.take(2)] == [1, 2]
        assert [c.revision for c in await sub.take(9)] == [3, 4, 5]


async def test_a_subscriber_past_its_bound_is_dropped_after_what_it_had() -> None:
    feed = ChangeFeed(queue_size=3)
    with feed.subscribe(None) as slow, feed.subscribe(lambda i: False) as idle:
        feed.publish([_change(1, "a"), _change(2, "a")])
        feed.publish([_change(3, "a"), _change(4, "a")])  # 4 > 3: overflowed
        assert slow.overflowed and feed.subscribers == 1 and not idle.overflowed
        assert [c.revision for c in await slow.take(200)] == [1, 2]
        assert await asyncio.wait_for(slow.take(200), 1) == []  # drained: the stream ends


async def test_a_subscription_to_one_cluster_is_asked_about_that_cluster_only() -> None:
    feed = ChangeFeed()
    asked: list[FeedItem] = []

    def accepts(item: FeedItem) -> bool:
        asked.append(item)
        return True

    mine, status = _change(1, "a"), ClusterStatus("a", True, 1.0)
    with feed.subscribe(accepts, cluster="a") as sub, feed.subscribe(None) as everything:
        assert feed.subscribers == 2
        feed.publish([mine, _change(2, "b"), status, ClusterStatus("b", False, 1.0)])
        assert await sub.take(200) == asked == [mine, status]
        assert len(await everything.take(200)) == 4
    assert feed.subscribers == 0
