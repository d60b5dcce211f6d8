"""Duplicated and reordered agent messages: captured on the agents' topics, published again.

A `Replayer` subscribes to every agent's `agentevents` topic and keeps the last `keep`
messages it saw. While `run` is awaited it publishes, every `every_s`, on the topic a message
came from:
- a duplicate: a copy of one of the few latest messages (as a redelivery after a lost PUBACK);
- a reordered message: a copy of an older one, after newer ones have gone through (as a
  redelivery overtaking nothing but arriving late).
Payloads are published byte for byte, envelope ids included: the hub must be idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from app.transport import topics
from app.transport.mqtt import LinkOptions, MqttLink

RECENT = 5
"""A duplicate is a copy of one of the latest RECENT messages."""


@dataclass
class ReplayCounts:
    captured: int = 0
    duplicated: int = 0
    reordered: int = 0


class Replayer:
    def __init__(self, broker_url: str, *, seed: int, keep: int = 400) -> None:
        self.counts = ReplayCounts()
        self._rng = random.Random(seed)
        self._seen: deque[tuple[str, bytes]] = deque(maxlen=keep)
        self._mine: set[bytes] = set()
        self._link = MqttLink(
            LinkOptions(
                url=broker_url,
                client_id=f"ti-faults-replayer-{seed}",
                subscriptions=(topics.all_agent_events(topics.DEFAULT_SOURCE, None),),
                max_inflight=16,
            ),
            self._capture,
        )

    async def __aenter__(self) -> Replayer:
        await self._link.__aenter__()
        await asyncio.wait_for(self._link.wait_connected(), 10)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._link.close()

    async def _capture(self, topic: str, payload: bytes) -> None:
        if _fingerprint(payload) in self._mine:
            return  # our own copy coming back: replaying it again would compound
        self._seen.append((topic, payload))
        self.counts.captured += 1

    async def _publish(self, topic: str, payload: bytes) -> None:
        self._mine.add(_fingerprint(payload))
        await self._link.publish(topic, payload)

    async def run(self, *, for_s: float, every_s: float = 0.05) -> ReplayCounts:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + for_s
        while loop.time() < deadline:
            await asyncio.sleep(every_s)
            seen = list(self._seen)
            if len(seen) < 2:
                continue
            topic, payload = seen[-1 - self._rng.randrange(min(RECENT, len(seen)))]
            await self._publish(topic, payload)
            self.counts.duplicated += 1
            if len(seen) > RECENT:
                topic, payload = seen[self._rng.randrange(len(seen) - RECENT)]
                await self._publish(topic, payload)
                self.counts.reordered += 1
        await asyncio.wait_for(self._link.flush(), 10)
        return self.counts


def _fingerprint(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()
