"""What the hub says about itself while a fault lasts, against what it is doing.

A `Probe` runs three independent loops (so one hanging request does not hold up the others),
each every `every_s` and each request with a timeout:
- `GET /readyz`: ready or not, and its checks (or no answer);
- a REST read, `GET /clusters/<c>/resources?limit=500` (a page a client would read): status
  and latency;
- ingest: `GET /metrics` (write transactions so far, messages queued for ingest) and the
  hub's log (new "writing a batch failed" lines).
`findings` judges the fault window against what /readyz promises: not ready while writes
keep failing (a failure with no commit after it), nor while messages have waited longer than
the hub's `stuck_after_s` with no commit; a sample may lag the state by one sampling period.
Also REST reads failing or hanging, and /readyz hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from tests.harness import AUTH

TIMEOUT_S = 3.0
FAILED_WRITE = b"writing a batch failed"
METRIC = re.compile(r"^(ti_ingest_batches_total|ti_ingest_queued_messages)\s+([0-9.]+)$", re.M)


@dataclass(frozen=True, slots=True)
class Ready:
    at: float
    ready: bool | None
    """None: no answer (`took` tells a hang from a refused connection)."""
    took: float
    failed_checks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rest:
    at: float
    status: int | None
    took: float


@dataclass(frozen=True, slots=True)
class Ingest:
    at: float
    batches: float | None
    queued: float | None
    failed_writes: int
    """New "writing a batch failed" lines since the previous sample."""


class Probe:
    def __init__(
        self,
        base_url: str,
        cluster: str,
        hub_log: Path,
        *,
        every_s: float = 0.5,
        stuck_after_s: float = 2.0,
    ) -> None:
        self._stuck_after_s = stuck_after_s
        self.ready: list[Ready] = []
        self.rest: list[Rest] = []
        self.ingest: list[Ingest] = []
        self._base_url = base_url
        self._cluster = cluster
        self._log = hub_log
        self._log_offset = hub_log.stat().st_size if hub_log.exists() else 0
        self._every_s = every_s
        self._tasks: list[asyncio.Task[None]] = []
        self._window = (0.0, float("inf"))
        self._http = httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S, headers=AUTH)

    async def __aenter__(self) -> Probe:
        loops = (self._sample_ready, self._sample_rest, self._sample_ingest)
        self._tasks = [asyncio.create_task(self._every(loop)) for loop in loops]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    def fault_window(self, start: float, end: float) -> None:
        """The span (time.monotonic) whose samples `findings` judges."""
        self._window = (start, end)

    async def _every(self, sample: Callable[[], Awaitable[None]]) -> None:
        while True:
            await sample()
            await asyncio.sleep(self._every_s)

    async def _get(self, path: str, **params: int) -> tuple[httpx.Response | None, float]:
        started = time.monotonic()
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError:
            return None, time.monotonic() - started
        return response, time.monotonic() - started

    async def _sample_ready(self) -> None:
        at = time.monotonic()
        response, took = await self._get("/readyz")
        body: dict[str, object] = {}
        with contextlib.suppress(ValueError, AttributeError):
            body = response.json() if response is not None else {}
        checks = body.get("checks") if isinstance(body.get("checks"), dict) else {}
        failed = tuple(sorted(k for k, ok in checks.items() if not ok))  # type: ignore[union-attr]
        ready = bool(body.get("ready")) if response is not None else None
        self.ready.append(Ready(at, ready, took, failed))

    async def _sample_rest(self) -> None:
        at = time.monotonic()
        response, took = await self._get(f"/clusters/{self._cluster}/resources", limit=500)
        self.rest.append(Rest(at, response.status_code if response is not None else None, took))

    async def _sample_ingest(self) -> None:
        at = time.monotonic()
        response, _ = await self._get("/metrics")
        values = dict(METRIC.findall(response.text)) if response is not None else {}
        self.ingest.append(
            Ingest(
                at,
                float(values["ti_ingest_batches_total"]) if values else None,
                float(values["ti_ingest_queued_messages"]) if values else None,
                self._new_failed_writes(),
            )
        )

    def _new_failed_writes(self) -> int:
        try:
            with open(self._log, "rb") as log:
                log.seek(self._log_offset)
                text = log.read()
        except FileNotFoundError:
            return 0
        self._log_offset += len(text)
        return text.count(FAILED_WRITE)

    def _troubled(self) -> list[tuple[float, float, str]]:
        """Spans of consecutive ingest samples with messages waiting and no commit, as
        (start, end, why): "writes failed" if a write failed in them, else "ingest stalled
        with messages queued"."""
        spans: list[tuple[float, float, str]] = []
        for a, b in zip(self.ingest, self.ingest[1:], strict=False):
            if not (b.queued and a.batches is not None and a.batches == b.batches):
                continue
            why = "writes failed" if b.failed_writes else "ingest stalled with messages queued"
            if spans and spans[-1][1] == a.at:
                start, _, before = spans[-1]
                why = "writes failed" if "writes failed" in (before, why) else why
                spans[-1] = (start, b.at, why)
            else:
                spans.append((a.at, b.at, why))
        return spans

    def _allowed_s(self, why: str) -> float:
        """How long into a span /readyz may still say ready (its promise, plus a sample's lag)."""
        lag = 2 * self._every_s
        return lag if why == "writes failed" else self._stuck_after_s + lag

    def findings(self) -> list[str]:
        start, end = self._window
        end += 1.0  # what the fault leaves behind for a moment counts too

        def inside(at: float) -> bool:
            return start <= at <= end

        out: list[str] = []
        ready = [s for s in self.ready if inside(s.at)]
        for reason in ("writes failed", "ingest stalled with messages queued"):
            spans = [(a, b) for a, b, why in self._troubled() if why == reason and inside(b)]
            late = self._allowed_s(reason)
            wrong = [s for s in ready if s.ready and any(a + late <= s.at <= b for a, b in spans)]
            if wrong:
                out.append(f"ready=true while {reason} ({len(wrong)}/{len(ready)} samples)")
        rest = [s for s in self.rest if inside(s.at)]
        errors = [s for s in rest if s.status is not None and s.status >= 500]
        if errors:
            codes = ", ".join(sorted({str(s.status) for s in errors}))
            out.append(f"REST read failed {len(errors)}/{len(rest)} (HTTP {codes})")
        hung = [s for s in rest if s.status is None and s.took >= TIMEOUT_S * 0.9]
        if hung:
            out.append(f"REST read hung > {TIMEOUT_S:.0f} s {len(hung)}/{len(rest)}")
        hung_ready = [s for s in ready if s.ready is None and s.took >= TIMEOUT_S * 0.9]
        if hung_ready:
            out.append(f"/readyz hung > {TIMEOUT_S:.0f} s {len(hung_ready)}/{len(ready)}")
        down = [s for s in ready if s.ready is None and s.took < TIMEOUT_S * 0.9]
        if down:
            out.append(f"hub not listening {len(down)}/{len(ready)}")
        not_ready = [s for s in ready if s.ready is False]
        if not_ready:
            failed = ", ".join(sorted({c for s in not_ready for c in s.failed_checks}))
            out.append(f"ready=false {len(not_ready)}/{len(ready)} ({failed})")
        return out
