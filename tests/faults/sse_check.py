"""The SSE checker: one unfiltered `GET /stream` held across the faults.

The revision counter is global and an unfiltered stream sees every change, so the ids of
ADDED/MODIFIED/DELETED events must go up by exactly one each. The checker starts without a
revision (the hub announces the current one in a BOOKMARK) and, whenever the stream ends or
the hub is away, reconnects with `Last-Event-ID` set to the last id it saw. It counts:
- gaps: revisions skipped (an id more than one above the last), and how many revisions;
- duplicates: ids at or below the last one seen;
- resets: RESET events, each either due (the revision asked for was older than the
  retained log, `retain_changes`) or not due (a finding).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType

import httpx
import orjson

from tests.harness import AUTH

RECONNECT_S = 0.2
CHANGE_EVENTS = {"ADDED", "MODIFIED", "DELETED"}


@dataclass
class SseReport:
    events: int = 0
    gaps: int = 0
    missing: int = 0
    """Revisions skipped in all gaps."""
    duplicates: int = 0
    resets: int = 0
    undue_resets: int = 0
    reconnects: int = 0
    last: int | None = None
    samples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.samples) < 5:
            self.samples.append(text)

    @property
    def clean(self) -> bool:
        return not (self.gaps or self.duplicates or self.undue_resets)


class SseChecker:
    """`async with SseChecker(url, retain_changes=N) as sse:` checks until the block ends."""

    def __init__(self, base_url: str, *, retain_changes: int) -> None:
        self.report = SseReport()
        self._base_url = base_url
        self._retain = retain_changes
        self._first: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Event()

    async def __aenter__(self) -> SseChecker:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            while self.report.last is None:
                await self._wait_advance()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, revision: int, timeout_s: float) -> bool:
        """Wait until the stream has reached `revision`; False if it did not in time."""
        try:
            async with asyncio.timeout(timeout_s):
                while (self.report.last or 0) < revision:
                    await self._wait_advance()
        except TimeoutError:
            return False
        return True

    async def _wait_advance(self) -> None:
        self._advanced.clear()
        await self._advanced.wait()

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self._base_url, timeout=None, headers=AUTH) as http:
            while True:
                with contextlib.suppress(httpx.HTTPError, OSError):
                    await self._follow(http)
                self.report.reconnects += 1
                await asyncio.sleep(RECONNECT_S)

    async def _follow(self, http: httpx.AsyncClient) -> None:
        last = self.report.last
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        timeout = httpx.Timeout(5.0, read=60.0)
        async with http.stream("GET", "/stream", headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                return
            event: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    event[name] = value.removeprefix(" ")
                    continue
                if event:
                    self._on_event(event, asked=last)
                event = {}

    def _on_event(self, event: dict[str, str], *, asked: int | None) -> None:
        report = self.report
        kind = event.get("event", "")
        if kind == "BOOKMARK" and report.last is None:
            report.last = self._first = int(event["id"])
        elif kind == "RESET":
            report.resets += 1
            current = int(orjson.loads(event.get("data", "{}")).get("resourceVersion", 0))
            due = asked is not None and current - asked > self._retain
            if not due:
                report.undue_resets += 1
                report.note(f"RESET asked from {asked}, hub at {current}")
            report.last = current  # a client re-lists, then streams from here
        elif kind in CHANGE_EVENTS and "id" in event:
            revision = int(event["id"])
            report.events += 1
            previous = report.last if report.last is not None else revision - 1
            if revision <= previous:
                report.duplicates += 1
                report.note(f"duplicate {revision} after {previous}")
                return
            if revision > previous + 1:
                report.gaps += 1
                report.missing += revision - previous - 1
                report.note(f"gap {previous} -> {revision}")
            report.last = revision
        else:
            return
        self._advanced.set()


async def current_revision(base_url: str, timeout_s: float = 10.0) -> int:
    """The hub's current revision, as a new stream's BOOKMARK announces it."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout_s, headers=AUTH) as http,
        http.stream("GET", "/stream") as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                return int(line.partition(":")[2])
    raise RuntimeError("the stream ended before its bookmark")
