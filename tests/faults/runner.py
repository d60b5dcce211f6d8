"""Runs one matrix row and reports it.

Timeline of a row: the testbed starts and the hub must hold exactly the truth (initial sync);
RSS and fds are sampled; an SSE checker and a probe start; churn runs `warm_s`; the fault is
injected and healed (`fault_s`); churn runs `after_s` more and stops; then the diff is polled
until it is empty or the deadline (resync period + margin) passes; the SSE checker must reach
the hub's current revision; RSS and fds are sampled again; the logs are searched.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.probe import Probe
from tests.faults.processes import Usage
from tests.faults.scenarios import Row
from tests.faults.sse_check import SseChecker, SseReport, current_revision
from tests.faults.testbed import STUCK_AFTER_S, BedParams, Testbed

SSE_CATCH_UP_S = 30.0
LOG_PATTERNS = {
    "missing chunks": r"is missing chunks",
    "relist requests": r"asking \S+ to relist",
    "failed writes": r"writing a batch failed",
    "failed checkpoints": r"WAL checkpoint failed",
    "tracebacks": r"^Traceback",
}
AGENT_PATTERNS = {
    "agent relists (410)": r"listing again",
    "agent too-large watches": r"Too large resource version",
}


@dataclass
class RowResult:
    id: str
    fault: str
    database: str
    status: str
    """converged, NOT CONVERGED, skipped or error."""
    converged: bool | None = None
    seconds: float | None = None
    diff: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    sse: dict[str, Any] = field(default_factory=dict)
    readyz: list[str] = field(default_factory=list)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    """The distinct exceptions the processes' tracebacks ended in ("hub: OSError: ...")."""
    injected: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def sse_clean(self) -> bool:
        return (
            bool(self.sse)
            and not (
                self.sse.get("gaps") or self.sse.get("duplicates") or self.sse.get("undue_resets")
            )
            and bool(self.sse.get("caught_up"))
        )

    @property
    def passed(self) -> bool:
        return self.status == "converged" and self.sse_clean

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def run_row(row: Row, params: BedParams, work_dir: Path) -> RowResult:
    result = RowResult(row.id, row.fault, row.database, "error")
    reason = await asyncio.to_thread(_unsupported, row, work_dir)
    if reason:
        result.status = "skipped"
        result.notes.append(reason)
        return result
    try:
        async with Testbed(params, row.needs, work_dir) as bed:
            await _run(row, params, bed, result)
            result.logs = _count_logs(bed)
            result.errors = _exceptions(bed)
    except Exception as exc:  # a row that cannot run is reported, the matrix goes on
        result.status = "error"
        result.notes.append(f"{type(exc).__name__}: {exc}")
        result.notes.append(traceback.format_exc(limit=3).strip().splitlines()[-1])
    return result


def _unsupported(row: Row, work_dir: Path) -> str | None:
    work_dir.mkdir(parents=True, exist_ok=True)
    return row.unsupported(work_dir) if row.unsupported else None


async def _run(row: Row, params: BedParams, bed: Testbed, result: RowResult) -> None:
    sync = await bed.converge(params.sync_timeout_s)
    if not sync.converged:
        result.notes.append(f"initial sync failed: {sync.diff.counts()}")
        return
    result.notes.append(f"initial sync {sync.seconds:.1f} s")
    before = bed.usage()
    async with (
        SseChecker(bed.url, retain_changes=params.retain_changes) as sse,
        Probe(bed.url, bed.clusters[0], bed.hub.log_path, stuck_after_s=STUCK_AFTER_S) as probe,
    ):
        bed.start_churn()
        await asyncio.sleep(params.warm_s)
        started = time.monotonic()
        result.injected = await row.inject(bed)
        probe.fault_window(started, time.monotonic())
        await _supervise(bed, result)
        await asyncio.sleep(params.after_s)
        await bed.stop_churn()
        result.injected["changes"] = sum(churn.changes for churn in bed.churns)
        convergence = await bed.converge(params.deadline_s)
        result.converged = convergence.converged
        result.seconds = round(convergence.seconds, 1)
        result.diff = convergence.diff.counts()
        result.examples = convergence.diff.examples
        result.status = "converged" if convergence.converged else "NOT CONVERGED"
        caught_up = False
        with contextlib.suppress(Exception):
            caught_up = await sse.wait_for(await current_revision(bed.url), SSE_CATCH_UP_S)
        result.sse = _sse_json(sse.report, caught_up)
        result.readyz = probe.findings()
    result.usage = _usage_deltas(before, bed.usage())


async def _supervise(bed: Testbed, result: RowResult) -> None:
    """Restart, as a supervisor would, what died by itself during the fault (a finding)."""
    for process in (bed.hub, *bed.agents):
        if not process.alive:
            result.notes.append(f"{process.name} died during the fault ({process.exit_status})")
            process.start()
    await bed.wait_hub()


def _sse_json(report: SseReport, caught_up: bool) -> dict[str, Any]:
    return {
        "events": report.events,
        "gaps": report.gaps,
        "missing": report.missing,
        "duplicates": report.duplicates,
        "resets": report.resets,
        "undue_resets": report.undue_resets,
        "reconnects": report.reconnects,
        "caught_up": caught_up,
        "samples": report.samples,
    }


def _usage_deltas(
    before: dict[str, tuple[int, Usage | None]], after: dict[str, tuple[int, Usage | None]]
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (incarnation, used) in after.items():
        first_incarnation, first = before.get(name, (0, None))
        if used is None or first is None:
            continue
        out[name] = {
            "rss_kib": used.rss_kib,
            "rss_delta_kib": used.rss_kib - first.rss_kib,
            "fds": used.fds,
            "fds_delta": used.fds - first.fds,
            "restarted": incarnation != first_incarnation,
        }
    return out


def _count_logs(bed: Testbed) -> dict[str, int]:
    counts: dict[str, int] = {}
    hub_log = _read(bed.hub.log_path)
    for label, pattern in LOG_PATTERNS.items():
        counts[label] = len(re.findall(pattern, hub_log, re.M))
    for label, pattern in AGENT_PATTERNS.items():
        counts[label] = sum(len(re.findall(pattern, _read(a.log_path))) for a in bed.agents)
    return counts


def _exceptions(bed: Testbed, most: int = 5) -> list[str]:
    """The line each traceback in the logs ends with, per process, once each."""
    found: dict[str, None] = {}
    for process in (bed.hub, *bed.agents):
        lines = _read(process.log_path).splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("Traceback"):
                continue
            end = next((x for x in lines[i + 1 :] if x and not x[0].isspace() and x[0] != "^"), "")
            found.setdefault(f"{process.name}: {end[:200]}")
    return list(found)[:most]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def markdown_table(results: list[RowResult]) -> str:
    head = (
        "| fault | db | converged | time s | lost | stale-older | stale-newer | phantom "
        "| SSE gaps/dups/resets | readyz and REST | hub RSS Δ MiB / fds Δ | notes |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        d = r.diff
        sse = r.sse
        sse_text = (
            f"{sse.get('gaps', '-')}/{sse.get('duplicates', '-')}/{sse.get('resets', '-')}"
            + ("" if sse.get("caught_up", True) else " (behind)")
            if sse
            else "-"
        )
        hub = r.usage.get("hub", {})
        hub_text = (
            f"{hub['rss_delta_kib'] / 1024:+.1f} / {hub['fds_delta']:+d}"
            + (" (restarted)" if hub.get("restarted") else "")
            if hub
            else "-"
        )
        notes = (
            [f"{k} {v}" for k, v in r.logs.items() if v]
            + r.notes[1:]
            + [f"{k} {v}" for k, v in r.injected.items() if k != "changes"]
        )
        converged = {"converged": "yes", "NOT CONVERGED": "**NO**"}.get(r.status, r.status)
        lines.append(
            f"| {r.fault} | {r.database} | {converged} | "
            f"{r.seconds if r.seconds is not None else '-'} | "
            + " | ".join(
                str(d.get(c, "-")) for c in ("lost", "stale_older", "stale_newer", "phantom")
            )
            + f" | {sse_text} | {'; '.join(r.readyz) or '-'} | {hub_text} | "
            + f"{'; '.join(notes) or '-'} |"
        )
    return "\n".join(lines)
