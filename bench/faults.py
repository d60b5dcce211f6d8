"""`make faults`: the fault matrix, every row against ground truth, as a table and JSON.

Each row starts its own world (mosquitto, the hub as a process on SQLite or a private
PostgreSQL database, fake Kubernetes API servers with seeded churn in this process, one agent
process per cluster on the kubernetes source), injects one fault under churn, heals it, and
judges: did every cluster's objects converge to the truth within the deadline (resync period
+ margin), how long it took, what differed (lost, stale-older, stale-newer, phantom), what an
unfiltered SSE stream held across the fault saw (gaps, duplicates, resets), what /readyz and
REST said during the fault, and how RSS and fds moved. See docs/faults.md.

Writes bench/results/faults.json (params, machine, rows) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fault harness lives in tests/faults

from tests.faults.runner import RowResult, markdown_table, run_row  # noqa: E402
from tests.faults.scenarios import MATRIX, Row  # noqa: E402
from tests.faults.testbed import QUICK, BedParams  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "faults.json"


def parse_args(argv: Sequence[str] | None) -> tuple[BedParams, list[Row], Path, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="", help="comma-separated substrings of row ids")
    parser.add_argument("--list", action="store_true", help="list the row ids and exit")
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller sizes")
    parser.add_argument("--clusters", type=int)
    parser.add_argument("--objects", type=int, help="objects per cluster")
    parser.add_argument("--rate", type=float, help="changes per second over all clusters")
    parser.add_argument("--resync", type=float, help="agents' digest resync period, s")
    parser.add_argument("--margin", type=float, help="deadline = resync x 1.2 + margin, s")
    parser.add_argument("--fault-s", type=float, help="how long each fault lasts, s")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="keep each row's logs and files under this dir")
    args = parser.parse_args(argv)
    if args.list:
        for row in MATRIX:
            print(row.id)
        sys.exit(0)
    params = QUICK if args.quick else BedParams()
    overrides = {
        "clusters": args.clusters,
        "objects": args.objects,
        "rate": args.rate,
        "resync_s": args.resync,
        "margin_s": args.margin,
        "fault_s": args.fault_s,
        "seed": args.seed,
    }
    params = dataclasses.replace(params, **{k: v for k, v in overrides.items() if v is not None})
    wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
    rows = [row for row in MATRIX if not wanted or any(w in row.id for w in wanted)]
    if not rows:
        parser.error(f"no row matches {args.rows!r} (see --list)")
    return params, rows, args.out, args.keep


def machine_info() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_avg_at_start": os.getloadavg(),
    }


async def run_matrix(params: BedParams, rows: list[Row], work: Path) -> list[RowResult]:
    results = []
    for number, row in enumerate(rows, 1):
        started = time.monotonic()
        print(f"[{number}/{len(rows)}] {row.id} ...", flush=True)
        result = await run_row(row, params, work / row.id)
        took = time.monotonic() - started
        print(
            f"    {result.status}"
            + (f" in {result.seconds} s" if result.seconds is not None else "")
            + f", diff {result.diff or '-'}, sse {result.sse.get('gaps', '-')} gaps"
            + f" ({took:.0f} s for the row) {'; '.join(result.notes[1:])}",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    params, rows, out, keep = parse_args(argv)
    document: dict[str, Any] = {
        "params": {**dataclasses.asdict(params), "deadline_s": params.deadline_s},
        "machine": machine_info(),
    }
    if keep is not None:
        results = asyncio.run(run_matrix(params, rows, keep))
    else:
        with tempfile.TemporaryDirectory(prefix="ti-faults-") as work:
            results = asyncio.run(run_matrix(params, rows, Path(work)))
    document["rows"] = [r.as_json() for r in results]
    document["summary"] = {
        "rows": len(results),
        "passed": sum(r.passed for r in results),
        "not_converged": [r.id for r in results if r.status == "NOT CONVERGED"],
        "sse_findings": [r.id for r in results if r.sse and not r.sse_clean],
        "skipped": [r.id for r in results if r.status == "skipped"],
        "errors": [r.id for r in results if r.status == "error"],
    }
    table = markdown_table(results)
    print("\n" + table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
