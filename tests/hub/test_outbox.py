"""The hub's outbox: ingest hands hub -> agent messages over without waiting on the broker."""

from __future__ import annotations

import asyncio

from app.hub.outbox import Outbox
from tests.conftest import wait_until


async def _sent(outbox: Outbox, count: int) -> bool:
    return outbox.sent >= count


class Broker:
    """An in-memory publish that waits until it is opened (a full in-flight window)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.open.wait()
        if payload == b"boom":
            raise ConnectionError("lost")
        self.sent.append((topic, payload))


async def test_put_never_waits_for_the_broker_and_messages_go_in_order() -> None:
    """Published inline, a resync request waited for the broker while ingest held the
    broker's reading paused, so ingest stalled 5 s a request (2,000 agents connecting)."""
    broker = Broker()
    outbox = Outbox(broker.publish)
    sender = asyncio.ensure_future(outbox.run())
    try:
        for i in range(100):
            assert outbox.put(f"t/{i % 3}", str(i).encode())  # returns at once
        await asyncio.sleep(0.01)
        assert broker.sent == []
        broker.open.set()
        await wait_until(lambda: _sent(outbox, 100), what="every message sent")
        assert [int(p) for _, p in broker.sent] == list(range(100))
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


async def test_a_full_outbox_drops_and_counts_instead_of_growing() -> None:
    outbox = Outbox(Broker().publish, max_queued=3)
    assert all(outbox.put("t", b"x") for _ in range(3))
    assert not outbox.put("t", b"x")
    assert (outbox.queued, outbox.dropped) == (3, 1)


async def test_a_failed_publish_is_counted_and_the_next_message_goes() -> None:
    broker = Broker()
    broker.open.set()
    outbox = Outbox(broker.publish)
    sender = asyncio.ensure_future(outbox.run())
    try:
        outbox.put("t", b"boom")
        outbox.put("t", b"ok")
        await wait_until(lambda: _sent(outbox, 1), what="the second message sent")
        assert (broker.sent, outbox.dropped) == ([("t", b"ok")], 1)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
