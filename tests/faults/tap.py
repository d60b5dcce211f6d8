"""A tap on the agents' topic: the messages the hub is sent, seen as it is sent them.

Used to time a fault to the protocol (kill the hub between two chunks of one snapshot) rather
than to the clock. The tap is its own MQTT client, so it sees each message about when the hub
does, without taking anything from the hub's session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

import orjson

from app.transport import topics
from app.transport.mqtt import LinkOptions, MqttLink

Envelope = dict[str, Any]


class Tap:
    def __init__(self, broker_url: str, cluster: str) -> None:
        self._waiters: list[tuple[Callable[[Envelope], bool], asyncio.Future[Envelope]]] = []
        self._link = MqttLink(
            LinkOptions(
                url=broker_url,
                client_id=f"ti-faults-tap-{cluster}",
                subscriptions=(topics.agent_events(topics.DEFAULT_SOURCE, cluster),),
            ),
            self._seen,
        )

    async def __aenter__(self) -> Tap:
        await self._link.__aenter__()
        await asyncio.wait_for(self._link.wait_connected(), 10)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._link.close()

    async def _seen(self, topic: str, payload: bytes) -> None:
        envelope = orjson.loads(payload)
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(envelope):
                future.set_result(envelope)

    async def wait_for(self, predicate: Callable[[Envelope], bool], timeout_s: float) -> Envelope:
        """The next message `predicate` accepts; TimeoutError after `timeout_s`."""
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            self._waiters.remove(entry)


def partial_snapshot_chunk(kind: str) -> Callable[[Envelope], bool]:
    """Accepts a snapshot chunk of `kind` with more of its snapshot still to come."""

    def accepts(envelope: Envelope) -> bool:
        data = envelope.get("data") or {}
        is_chunk = str(envelope.get("type", "")).endswith(".resync_response")
        return is_chunk and data.get("kind") == kind and not data.get("last")

    return accepts
