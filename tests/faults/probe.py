"""What the hub says about itself while a fault lasts, against what it is doing.

Every `every_s` a `Probe` samples, concurrently and each with a timeout:
- `GET /readyz`: status and checks (or no answer);
- a REST read, `GET /clusters/<c>/resources?limit=1`: status and latency;
- `GET /metrics`: write transactions so far and messages queued for ingest;
- the hub's log: how many "writing a batch failed" lines appeared since the last sample.
`findings` turns the samples of the fault window into what an operator would want to know:
ready while writes fail or ingest is stalled, REST reads failing or hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

TIMEOUT_S = 3.0
FAILED_WRITE = "writing a batch failed"
METRIC = re.compile(r"^(ti_ingest_batches_total|ti_ingest_queued_messages)\s+([0-9.]+)$", re.M)


@dataclass
class Sample:
    at: float
    ready: bool | None
    """None: /readyz did not answer."""
    ready_s: float
    checks: dict[str, bool]
    rest_status: int | None
    """None: no answer within TIMEOUT_S (or the hub is down)."""
    rest_s: float
    batches: float | None
    queued: float | None
    failed_writes: int


class Probe:
    def __init__(self, base_url: str, cluster: str, hub_log: Path, *, every_s: float = 0.5) -> None:
        self.samples: list[Sample] = []
        self._base_url = base_url
        self._cluster = cluster
        self._log = hub_log
        self._log_offset = hub_log.stat().st_size if hub_log.exists() else 0
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._window: tuple[float, float] | None = None
        self._started = time.monotonic()

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def fault_window(self, start: float, end: float) -> None:
        """The span (monotonic seconds) whose samples `findings` judges."""
        self._window = (start - self._started, end - self._started)

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self._base_url, timeout=TIMEOUT_S) as http:
            while True:
                self.samples.append(await self._sample(http))
                await asyncio.sleep(self._every_s)

    async def _sample(self, http: httpx.AsyncClient) -> Sample:
        at = time.monotonic() - self._started
        ready, rest, metrics = await asyncio.gather(
            self._get(http, "/readyz"),
            self._get(http, f"/clusters/{self._cluster}/resources", limit=1),
            self._get(http, "/metrics"),
        )
        ready_body = _json_or_empty(ready[0])
        values = dict(METRIC.findall(metrics[0].text)) if metrics[0] is not None else {}
        return Sample(
            at=at,
            ready=bool(ready_body.get("ready")) if ready[0] is not None else None,
            ready_s=ready[1],
            checks=ready_body.get("checks", {}),
            rest_status=rest[0].status_code if rest[0] is not None else None,
            rest_s=rest[1],
            batches=float(values["ti_ingest_batches_total"]) if values else None,
            queued=float(values["ti_ingest_queued_messages"]) if values else None,
            failed_writes=self._new_failed_writes(),
        )

    @staticmethod
    async def _get(
        http: httpx.AsyncClient, path: str, **params: int
    ) -> tuple[httpx.Response | None, float]:
        started = time.monotonic()
        try:
            response = await http.get(path, params=params)
        except httpx.HTTPError:
            return None, time.monotonic() - started
        return response, time.monotonic() - started

    def _new_failed_writes(self) -> int:
        try:
            with open(self._log, "rb") as log:
                log.seek(self._log_offset)
                text = log.read()
        except FileNotFoundError:
            return 0
        self._log_offset += len(text)
        return text.count(FAILED_WRITE.encode())

    def findings(self) -> list[str]:
        """What /readyz and REST said during the fault window, where it matters."""
        start, end = self._window or (0.0, float("inf"))
        window = [s for s in self.samples if start <= s.at <= end + 1.0]
        out: list[str] = []
        failing = [s for s in window if s.ready and s.failed_writes]
        if failing:
            out.append(f"ready=true while writes failed ({len(failing)} samples)")
        stalled = [
            b
            for a, b in itertools.pairwise(window)
            if b.ready and b.queued and a.batches is not None and a.batches == b.batches
        ]
        if len(stalled) >= 2:
            out.append(
                f"ready=true while ingest stalled with messages queued ({len(stalled)} samples)"
            )
        errors = [s for s in window if s.rest_status is not None and s.rest_status >= 500]
        if errors:
            codes = sorted({s.rest_status for s in errors if s.rest_status is not None})
            out.append(f"REST read failed {len(errors)}x (HTTP {', '.join(map(str, codes))})")
        hung = [s for s in window if s.rest_status is None and s.rest_s >= TIMEOUT_S * 0.9]
        if hung:
            out.append(f"REST read hung > {TIMEOUT_S:.0f} s {len(hung)}x")
        hung_ready = [s for s in window if s.ready is None and s.ready_s >= TIMEOUT_S * 0.9]
        if hung_ready:
            out.append(f"/readyz hung > {TIMEOUT_S:.0f} s {len(hung_ready)}x")
        down = [s for s in window if s.ready is None and s.ready_s < TIMEOUT_S * 0.9]
        if down:
            out.append(f"hub not listening {len(down)}/{len(window)} samples")
        not_ready = [s for s in window if s.ready is False]
        if not_ready:
            failed = sorted({k for s in not_ready for k, ok in s.checks.items() if not ok})
            out.append(f"ready=false {len(not_ready)}/{len(window)} samples ({', '.join(failed)})")
        return out


def _json_or_empty(response: httpx.Response | None) -> dict[str, object]:
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
