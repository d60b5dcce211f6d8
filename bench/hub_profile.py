"""Optional py-spy sampling of the hub during a benchmark phase (`ingest.py --profile`).

Writes collapsed stacks (`bench/results/hub-<phase>.folded`, viewable with speedscope or
flamegraph.pl) and returns the functions where the hub spent most of its sampled time.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TOP = 12
SKIP = {"app/__main__.py", "app/cli.py"}
"""Entry points: in every main-thread stack, so they say nothing."""


def find_py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def sampled(pid: int, out: Path, summary: dict[str, Any]) -> Iterator[None]:
    """Sample `pid` while the block runs; fill `summary` with the top functions after."""
    py_spy = find_py_spy()
    if py_spy is None:
        summary["error"] = "py-spy not found (.venv/bin/pip install py-spy)"
        yield
        return
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
    proc = subprocess.Popen(
        [*command, "--rate", "100", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        if out.exists():
            summary.update(summarize(out))
        else:
            summary["error"] = err.decode(errors="replace")[-500:]


def _frame(frame: str) -> tuple[str, str]:
    """`func (app/hub/ingest.py:12)` -> (`func (ingest.py)`, `app/hub/ingest.py`)."""
    name, _, where = frame.partition(" (")
    path = where.split(":")[0]
    return f"{name} ({Path(path).name})", path


def summarize(folded: Path) -> dict[str, Any]:
    """Shares of the sampled thread-stacks: per project function (inclusive), per leaf
    function (self), and in aiosqlite's worker thread, where SQLite runs."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = sqlite = 0
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        if any(name.startswith("_connection_worker_thread") for name, _ in frames):
            sqlite += n
        for name in {name for name, path in frames if path.startswith("app/") and path not in SKIP}:
            inclusive[name] += n
        own[frames[-1][0]] += n

    def pct(counter: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(TOP)}

    return {
        "samples": total,
        "sqlite_worker_pct": round(100 * sqlite / total, 1) if total else 0.0,
        "app_inclusive_pct": pct(inclusive),
        "self_pct": pct(own),
    }
