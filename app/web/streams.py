"""Bounds on open event streams: `sse_max_streams` in total and
`sse_max_streams_per_principal` per token, session user or proxy user. A stream past
either bound is answered 429 with Retry-After before it starts.

A slot is taken when the route accepts the stream and given back when the response ends,
however it ends (`LimitedEventSource.__call__`'s `finally`), so a client that vanishes
frees its slot as soon as the server notices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from app.access.roles import Principal

RETRY_AFTER_S = 5
PING_S = 15
SEND_TIMEOUT_S = 30


class StreamSlots:
    def __init__(self, total: int, per_principal: int) -> None:
        self.total = total
        self.per_principal = per_principal
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def take(self, key: str) -> Callable[[], None]:
        """A slot for `key`, and the function that gives it back (idempotent); 429 if
        none is free."""
        if self.open >= self.total:
            raise _busy(f"the hub serves {self.total} streams already")
        if self._open[key] >= self.per_principal:
            raise _busy(f"{self.per_principal} streams of {key} are open already")
        self._open[key] += 1
        given_back = False

        def give_back() -> None:
            nonlocal given_back
            if not given_back:
                given_back = True
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]

        return give_back


def _busy(detail: str) -> HTTPException:
    return HTTPException(
        429, f"too many open streams: {detail}", headers={"Retry-After": str(RETRY_AFTER_S)}
    )


class LimitedEventSource(EventSourceResponse):
    def __init__(self, content: Any, *, give_back: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._give_back = give_back

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._give_back()


def event_stream(
    request: Request,
    principal: Principal,
    events: AsyncIterator[ServerSentEvent | bytes],
    *,
    ping: int = PING_S,
) -> EventSourceResponse:
    """The SSE response of `events`, holding one of the principal's stream slots."""
    slots: StreamSlots = request.app.state.stream_slots
    give_back = slots.take(f"{principal.via}:{principal.name}")
    return LimitedEventSource(events, give_back=give_back, ping=ping, send_timeout=SEND_TIMEOUT_S)
