"""The hub's outbox: hub -> agent messages, sent by one task so that ingest never waits on
the broker.

Resync requests and the answers to agents' workload resyncs are decided inside the ingest
loop. Published there, each waited for room in the MQTT link's in-flight window; and while
ingest held the broker's reading paused (its queue full, `Ingest.backpressure`), the PUBACKs
that free that window were not read, so each publish waited out its 5 s timeout and ingest
stalled behind it (seen with 2,000 agents connecting at once). Now ingest only puts the
message here and goes on.

Contract:
- Messages are sent in the order they were put (per cluster, and overall).
- Bounded: with `max_queued` messages waiting, a new one is dropped, counted (`dropped`) and
  logged at most once a minute. Nothing here is lost for good: a relist is asked again by
  the cluster's next digest, and workload deliveries are re-sent by the dispatcher until
  the agent acknowledges them.
- A message whose publish fails is dropped and counted the same way; the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
WARN_EVERY_S = 60.0


class Outbox:
    def __init__(
        self, publish: Publish, *, max_queued: int = 20_000, publish_timeout_s: float = 30.0
    ) -> None:
        self._publish = publish
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(max_queued)
        self._timeout_s = publish_timeout_s
        self.sent = 0
        self.dropped = 0
        self._warned = -WARN_EVERY_S

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def put(self, topic: str, payload: bytes) -> bool:
        """Queue a message without waiting; False (dropped, counted) when the outbox is full."""
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self._drop(f"the outbox is full ({self._queue.maxsize} messages)")
            return False
        return True

    async def send(self, topic: str, payload: bytes) -> None:
        """`put` with the shape of a publish function (for the workload dispatcher)."""
        self.put(topic, payload)

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            topic, payload = await self._queue.get()
            try:
                await asyncio.wait_for(self._publish(topic, payload), self._timeout_s)
            except Exception as exc:
                self._drop(f"publish failed: {exc!r}")
            else:
                self.sent += 1

    def _drop(self, why: str) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            log.warning("hub -> agent message dropped (%s); %d dropped so far", why, self.dropped)
