"""`make bench`: ingest throughput and change-to-SSE latency, everything local, in one run.

Processes: a private Mosquitto (`app.broker`), the hub as in production (`python -m app hub`,
uvicorn + HubService, SQLite file in a temp dir), and every simulated agent in one child
process (`bench/fleet.py`), so the hub has its own interpreter and the agents theirs. This
process only drives the fleet, polls the hub's SQLite file and reads the SSE stream.

Phases, in order:
  (c) storage: the writer (`InventoryWriter.apply`) and a plain reference doing the same work
      with the driver alone (`bench/storage.py`: sqlite3 or asyncpg, the hub's schema, the
      hub's batch size), the same objects and changes, on a fresh database (run first, on a
      quiet machine);
  (a) initial sync: N agents start, time until the hub holds N x objects live rows;
  (b) sustained ingest: `--changes` changes driven through the agents as fast as they take
      them; committed changes/s measured on the hub's revision counter;
  (d) latency: at half of (b)'s capacity measured in this run (or `--rate` changes/s) for
      `--seconds`, each change stamped with its wall-clock time in an annotation;
      latency = SSE receive time - stamp.
`--database postgresql` runs the hub (and (c)) on a private database of the local
PostgreSQL instead of SQLite.
Prints a table and writes bench/results/ingest.json. With `--profile` (needs py-spy in the
venv), the hub is sampled in each live phase: bench/results/hub-<phase>.folded, summarized
in the JSON under `hub_profile`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import gmqtt
import httpx
import orjson

from app.broker import Mosquitto, free_port
from app.cli import tune_gc
from app.store.migrate import upgrade_async
from app.transport import topics

sys.path.insert(0, str(Path(__file__).resolve().parent))
import storage
from fleet import SEQ_ANNOTATION, T0_ANNOTATION, run_fleet
from hub_profile import sampled

ROOT = Path(__file__).resolve().parents[1]
BENCH_TOKEN = "bench-bootstrap-admin-token-0123456789abcdef"
"""The benchmarks' hubs take this bootstrap admin token (TI_BOOTSTRAP_TOKEN); clients send it."""
AUTH = {"Authorization": f"Bearer {BENCH_TOKEN}"}
HUB_ENV = {
    "TI_BOOTSTRAP_TOKEN": BENCH_TOKEN,
    # one token opens every measured dashboard: lift the per-principal stream bound
    "TI_SSE_MAX_STREAMS": "5000",
    "TI_SSE_MAX_STREAMS_PER_PRINCIPAL": "5000",
}
RESULTS = ROOT / "bench" / "results" / "ingest.json"
"""bench/results/ingest.json (SQLite) or ingest-postgresql.json."""
HUB_BATCH = 5000
"""HubSettings.batch_max_events: the raw-storage phase applies batches of this size."""
POLL_S = 0.1
SYNC_TIMEOUT_S = 120
IDLE_CORES = 0.15
IDLE_WINDOW_S = 0.5
"""A phase is over when the hub uses under IDLE_CORES of a core over IDLE_WINDOW_S."""
PROGRESS_WINDOW_S = 3.0
"""... and, where the revision is watched too, it did not move for this long: a batch of
5,000 changes takes over a second to commit on PostgreSQL here, the hub idle meanwhile."""
Reply = dict[str, Any]


@dataclass(frozen=True)
class Params:
    clusters: int
    objects: int
    changes: int
    burst: int
    rate: float | None
    """None: half of the end-to-end capacity (b) measured in the same run."""
    seconds: float
    quick: bool
    profile: bool
    database: str = "sqlite"


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, help="simulated clusters (default 100)")
    parser.add_argument("--objects", type=int, help="objects per cluster (default 1000)")
    parser.add_argument("--changes", type=int, help="changes for (b) and (c) (default 200000)")
    parser.add_argument("--burst", type=int, default=100, help="mutate() calls per cluster turn")
    parser.add_argument(
        "--rate", type=float, help="changes/s for the latency phase (default: half of (b))"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, help="latency phase duration (default 10)")
    parser.add_argument("--quick", action="store_true", help="a small run (10 x 200, 20k changes)")
    parser.add_argument(
        "--profile", action="store_true", help="sample the hub with py-spy in each live phase"
    )
    args = parser.parse_args(argv)
    small = args.quick

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if small else full)

    return Params(
        clusters=pick(args.clusters, 100, 10),
        objects=pick(args.objects, 1000, 200),
        changes=pick(args.changes, 200_000, 20_000),
        burst=args.burst,
        rate=args.rate,
        seconds=pick(args.seconds, 10.0, 3.0),
        quick=small,
        profile=args.profile,
        database=args.database,
    )


def machine_info() -> Reply:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "load_avg_at_start": os.getloadavg(),
    }


# -- helpers ------------------------------------------------------------------------------


class DbProbe:
    """Reads the hub's SQLite file from outside (WAL: readers never block the writer)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None)

    def live_rows(self) -> int:
        return int(
            self._conn.execute("SELECT count(*) FROM resources WHERE deleted=0").fetchone()[0]
        )

    def revision(self) -> int:
        return int(self._conn.execute("SELECT value FROM revision_counter").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


class PgProbe:
    """The same reads from the hub's PostgreSQL database, on a private event loop."""

    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn = self._loop.run_until_complete(asyncpg.connect(url))

    def _value(self, sql: str) -> int:
        return int(self._loop.run_until_complete(self._conn.fetchval(sql)))

    def live_rows(self) -> int:
        return self._value("SELECT count(*) FROM resources WHERE NOT deleted")

    def revision(self) -> int:
        return self._value("SELECT value FROM revision_counter")

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


class CpuMeter:
    """CPU seconds used by the benchmark's processes (Linux /proc), to see where time goes."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._tick = os.sysconf("SC_CLK_TCK")

    def seconds(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime

    def snapshot(self) -> dict[str, float]:
        return {name: self.seconds(pid) for name, pid in self.pids.items()}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        now = self.snapshot()
        return {name: round(now[name] - before[name], 2) for name in now}

    def wait_idle(
        self,
        name: str,
        timeout: float,
        tick: Callable[[], None],
        progress: Callable[[], int] | None = None,
    ) -> float:
        """Wait until process `name` uses under IDLE_CORES for IDLE_WINDOW_S and `progress`
        (e.g. the committed revision) did not move in that window; seconds waited. On
        PostgreSQL the hub waits for the server, whose CPU is not the hub's: its CPU alone
        said "idle" while a backlog was still being committed."""
        pid, started = self.pids[name], time.monotonic()
        window = IDLE_WINDOW_S if progress is None else PROGRESS_WINDOW_S
        while time.monotonic() - started < timeout:
            cpu, t = self.seconds(pid), time.monotonic()
            mark = progress() if progress else 0
            while time.monotonic() - t < window:
                time.sleep(POLL_S)
                tick()
            quiet = (self.seconds(pid) - cpu) / (time.monotonic() - t) < IDLE_CORES
            if quiet and (progress is None or progress() == mark):
                break
        return time.monotonic() - started


class RevisionTrace:
    """The hub's revision counter sampled over time, relative to where it started."""

    def __init__(self, probe: DbProbe) -> None:
        self.probe = probe
        self.base = probe.revision()
        self.started = time.monotonic()
        self.samples: list[tuple[float, int]] = [(0.0, 0)]

    @property
    def committed(self) -> int:
        return self.samples[-1][1]

    def sample(self) -> None:
        self.samples.append((time.monotonic() - self.started, self.probe.revision() - self.base))

    def time_to(self, level: float) -> float:
        """The first sampled time at which `level` changes were committed."""
        return next(t for t, n in self.samples if n >= level)


class FleetHandle:
    """The parent's side of the fleet process: one command at a time, one reply each.

    `target` is the child's entry point, called with the child's end of the pipe and then
    `args` (default: `bench/fleet.py`'s `run_fleet` of `clusters` x `objects`)."""

    def __init__(
        self,
        broker_url: str,
        clusters: int,
        objects: int,
        first: int = 0,
        *,
        target: Callable[..., None] = run_fleet,
        args: tuple[Any, ...] | None = None,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=target,
            args=(child, *(args or (broker_url, clusters, objects, first))),
            daemon=True,
        )
        self.process.start()
        self.ready = self._wait(self._conn, 120.0)

    @staticmethod
    def _wait(conn: Connection, timeout: float, tick: Callable[[], None] | None = None) -> Reply:
        deadline = time.monotonic() + timeout
        while not conn.poll(POLL_S):
            if tick:
                tick()
            if time.monotonic() > deadline:
                raise TimeoutError("the agent fleet did not answer")
        reply: Reply = conn.recv()
        return reply

    def call(
        self, *command: Any, timeout: float = 300.0, tick: Callable[[], None] | None = None
    ) -> Reply:
        """Send a command; while waiting for its reply, call `tick` every POLL_S."""
        self.send(*command)
        return self.reply(timeout, tick)

    def send(self, *command: Any) -> None:
        """Send a command without waiting (`reply` takes its answer): several fleet
        processes can work on one command each at the same time."""
        self._conn.send(command)

    def reply(self, timeout: float = 300.0, tick: Callable[[], None] | None = None) -> Reply:
        return self._wait(self._conn, timeout, tick)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.call("stop", timeout=60)
            finally:
                self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()


@dataclass(frozen=True)
class Hub:
    url: str
    pid: int


@contextmanager
def hub_process(broker_url: str, database_url: str, log_path: Path) -> Iterator[Hub]:
    """`python -m app hub` on a free port, until the block ends; entered once it is ready."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "app", "hub", "--broker", broker_url),
        *("--database-url", database_url, "--port", str(port)),
        *("--replica-id", "bench-hub", "--log-level", "INFO"),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **HUB_ENV}
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log_path)
        yield Hub(base, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the hub exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                time.sleep(0.5)  # the subscription is requested on connect; let it settle
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the hub was not ready within 60 s:\n{log_path.read_text()[-3000:]}")


def hub_log_summary(path: Path) -> Reply:
    """What the hub said (at INFO): relist requests, warnings and errors, with examples."""
    lines = path.read_text(errors="replace").splitlines()
    relists = [line for line in lines if "to relist" in line]
    problems = [line for line in lines if " WARNING " in line or " ERROR " in line]
    return {
        "relist_requests": len(relists),
        "warnings_and_errors": len(problems),
        "examples": relists[:3] + problems[:5],
    }


def percentile(values: Sequence[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def quantiles(ordered: Sequence[float]) -> list[float]:
    """The 0th, 1st, ..., 100th percentile of sorted values (a distribution for a chart)."""
    if len(ordered) < 2:
        return list(ordered)
    inner = statistics.quantiles(ordered, n=100, method="inclusive")
    return [ordered[0], *inner, ordered[-1]]


# -- (c) raw storage ----------------------------------------------------------------------


def measure_storage(p: Params) -> Reply:
    """The writer and the plain reference (`bench/storage.py`) on this run's sizes."""
    inserts, changes = storage.workload(p.clusters * p.objects, p.changes)
    if p.database == "postgresql":
        results = asyncio.run(storage.pg_variants(inserts, changes))
    else:
        with tempfile.TemporaryDirectory(prefix="ti-storage-") as tmp:
            writer = asyncio.run(
                storage.run_writer(f"sqlite:///{tmp}/w.db", inserts, changes, "sqlite")
            )
            asyncio.run(upgrade_async(f"sqlite:///{tmp}/p.db"))
            plain = storage.run_plain_sqlite(Path(tmp) / "p.db", inserts, changes)
        results = [
            storage.Measure("writer", "sqlite", *writer),
            storage.Measure("plain", "sqlite", *plain),
        ]
    got = {m.variant: m for m in results}
    return {
        "batch": HUB_BATCH,
        "objects": len(inserts),
        "changes": len(changes),
        "writer_insert_rows_per_s": got["writer"].insert_rows_per_s,
        "writer_change_rows_per_s": got["writer"].change_rows_per_s,
        "plain_insert_rows_per_s": got["plain"].insert_rows_per_s,
        "plain_change_rows_per_s": got["plain"].change_rows_per_s,
    }


# -- (a) initial sync ---------------------------------------------------------------------


def measure_sync(fleet: FleetHandle, probe: DbProbe, cpu: CpuMeter, expected: int) -> Reply:
    before = cpu.snapshot()
    started = time.monotonic()
    fleet.call("start")
    rows = probe.live_rows()
    while rows < expected and time.monotonic() - started < SYNC_TIMEOUT_S:
        time.sleep(POLL_S)
        rows = probe.live_rows()
    seconds = time.monotonic() - started
    used = cpu.since(before)
    trace = RevisionTrace(probe)
    settle_s = cpu.wait_idle("hub", 120, trace.sample, probe.revision)  # (b) starts idle
    return {
        "expected_rows": expected,
        "rows": rows,
        "complete": rows >= expected,
        "seconds": seconds,
        "objects_per_s": rows / seconds,
        "cpu_s": used,
        "hub_idle_after_s": seconds + settle_s,
        "revisions_while_settling": trace.committed,
    }


# -- (b) sustained ingest -----------------------------------------------------------------


def measure_sustained(fleet: FleetHandle, probe: DbProbe, cpu: CpuMeter, p: Params) -> Reply:
    sent_before = fleet.call("stats")["sent"]
    before = cpu.snapshot()
    trace = RevisionTrace(probe)
    churned = fleet.call("churn", p.changes, p.burst, tick=trace.sample)
    drained = fleet.call("drain", tick=trace.sample)
    drained_at = time.monotonic() - trace.started
    cpu.wait_idle("hub", 300, trace.sample, probe.revision)
    trace.sample()
    committed = trace.committed
    seconds = trace.time_to(committed)
    t10, t90 = trace.time_to(0.1 * committed), trace.time_to(0.9 * committed)
    return {
        "mutations": churned["mutations"],
        "events_sent": drained["sent"] - sent_before,
        "committed": committed,
        "agent_seconds": churned["seconds"],
        "agent_mutations_per_s": churned["mutations"] / churned["seconds"],
        "agents_drained_at_s": drained_at,
        "seconds": seconds,
        "changes_per_s": committed / seconds if seconds else 0.0,
        "steady_changes_per_s": 0.8 * committed / (t90 - t10) if t90 > t10 else None,
        "cpu_s": cpu.since(before),
    }


@contextmanager
def drained_stream(base: str) -> Iterator[list[int]]:
    """`GET /stream` open and read (and thrown away) by a thread until the block ends, so
    the hub does a streaming client's work; yields [bytes received]."""
    url = httpx.URL(base)
    host, port = url.host, url.port or 80
    sock = socket.create_connection((host, port))
    sock.sendall(
        f"GET /stream HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {BENCH_TOKEN}\r\n\r\n".encode()
    )
    received = [0]

    def drain() -> None:
        with contextlib.suppress(OSError):
            while chunk := sock.recv(1 << 16):
                received[0] += len(chunk)

    reader = threading.Thread(target=drain, name="drained-stream", daemon=True)
    reader.start()
    try:
        yield received
    finally:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        reader.join(5)
        sock.close()


def measure_spread_capacity(fleet: FleetHandle, probe: DbProbe, cpu: CpuMeter, hub: Hub) -> Reply:
    """(b') the same, shaped like the latency phase: single changes spread round-robin over
    every cluster (so agents send small messages), as fast as the fleet makes them for 5 s,
    with one SSE stream open and read as in (d); committed changes/s until the hub is idle
    again."""
    before = cpu.snapshot()
    trace = RevisionTrace(probe)
    with drained_stream(hub.url) as streamed:
        stamped = fleet.call("stamp", 100_000.0, 5.0, tick=trace.sample)
        cpu.wait_idle("hub", 120, trace.sample, probe.revision)
    trace.sample()
    seconds = trace.time_to(trace.committed)
    return {
        "stamped": stamped["stamped"],
        "committed": trace.committed,
        "seconds": seconds,
        "changes_per_s": trace.committed / seconds if seconds else 0.0,
        "streamed_bytes": streamed[0],
        "cpu_s": cpu.since(before),
    }


# -- (d) change-to-SSE latency ------------------------------------------------------------


@dataclass
class SseCollector:
    """Reads GET /stream; for each stamped change, latency = receive time - stamp."""

    latencies: dict[int, float] = field(default_factory=dict)
    bookmark: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int | None = None
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def expect(self, count: int) -> None:
        self.expected = count
        if len(self.latencies) >= count:
            self.complete.set()

    async def read(self, response: httpx.Response) -> None:
        async for line in response.aiter_lines():
            if line.startswith("event:") and line.endswith("BOOKMARK"):
                self.bookmark.set()
            elif line.startswith("data:") and T0_ANNOTATION in line:
                self._record(line[5:], time.time())

    def _record(self, data: str, received: float) -> None:
        annotations = orjson.loads(data)["object"]["metadata"]["annotations"]
        seq = int(annotations[SEQ_ANNOTATION])
        self.latencies.setdefault(seq, received - float(annotations[T0_ANNOTATION]))
        if self.expected is not None and len(self.latencies) >= self.expected:
            self.complete.set()


class MqttTap:
    """A bare gmqtt subscriber on every cluster's agent events: for each stamped change, the
    time the broker delivered it, so the latency splits into agent + broker and hub parts."""

    def __init__(self, broker_url: str) -> None:
        host, port = broker_url.removeprefix("mqtt://").rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.seen: dict[int, float] = {}
        self.client = gmqtt.Client(f"bench-tap-{os.getpid()}")
        self.client.on_message = self._on_message

    def _on_message(self, _client: Any, _topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        received = time.time()
        if SEQ_ANNOTATION.encode() in payload:
            for event in orjson.loads(payload)["data"]["events"]:
                annotations = event["object"]["metadata"].get("annotations", {})
                if SEQ_ANNOTATION in annotations:
                    seq = int(annotations[SEQ_ANNOTATION])
                    self.seen.setdefault(seq, received - float(annotations[T0_ANNOTATION]))
        return 0

    async def __aenter__(self) -> MqttTap:
        await self.client.connect(self.host, self.port)
        self.client.subscribe(topics.all_agent_events(topics.DEFAULT_SOURCE), qos=0)
        await asyncio.sleep(0.2)  # the SUBACK
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.disconnect()


def _split(ms: dict[int, float], total: dict[int, float]) -> Reply:
    """Percentiles of the broker-delivery latency and of the rest (SSE - MQTT) per change."""
    broker = sorted(1000 * ms[s] for s in total if s in ms)
    hub = sorted(1000 * (total[s] - ms[s]) for s in total if s in ms)
    return {
        "changes": len(broker),
        "agent_and_broker_ms": {f"p{q}": percentile(broker, q) for q in (50, 90, 99)},
        "hub_ms": {f"p{q}": percentile(hub, q) for q in (50, 90, 99)},
    }


async def measure_latency(
    fleet: FleetHandle, hub: Hub, broker_url: str, p: Params, rate: float
) -> Reply:
    collector = SseCollector()
    async with (
        MqttTap(broker_url) as tap,
        httpx.AsyncClient(timeout=httpx.Timeout(None), headers=AUTH) as client,
        client.stream("GET", f"{hub.url}/stream") as response,
    ):
        reader = asyncio.create_task(collector.read(response))
        await asyncio.wait_for(collector.bookmark.wait(), 10)
        stamped = await asyncio.to_thread(fleet.call, "stamp", rate, p.seconds)
        collector.expect(stamped["stamped"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.complete.wait(), 10)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    ms = sorted(1000 * v for v in collector.latencies.values())
    return {
        "rate": rate,
        "seconds": stamped["seconds"],
        "stamped": stamped["stamped"],
        "received": len(ms),
        "achieved_rate": stamped["stamped"] / stamped["seconds"],
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1] if ms else None,
        "quantiles_ms": quantiles(ms),
        "split": _split(tap.seen, collector.latencies),
    }


# -- report -------------------------------------------------------------------------------


DEFINITIONS = {
    "initial_sync.seconds": "agents started -> hub DB holds clusters x objects live rows",
    "sustained.changes_per_s": "hub revisions committed / seconds from the first mutation "
    "to the last commit; steady_changes_per_s: between 10% and 90% of them",
    "storage": "InventoryWriter.apply, and a plain sqlite3/asyncpg reference doing the same "
    "work (upsert by key with a resourceVersion guard, a change row, the counter), of the "
    "same objects and changes in batches of 5000 on the hub's schema; only the write time",
    "spread.changes_per_s": "committed changes/s when single changes are spread round-robin "
    "over every cluster as fast as the fleet makes them, one SSE stream open and read (the "
    "latency phase's shape)",
    "latency": "SSE receive time - wall-clock stamp put in the object just before apply, at "
    "half of the lower of sustained and spread capacity measured in the same run",
    "cpu_s": "CPU seconds per process during the phase (from /proc)",
    "latency.split": "per change: stamp -> a bare MQTT subscriber's receive (agent and broker), "
    "and that -> SSE receive (hub: ingest, commit, feed, SSE)",
    "latency.quantiles_ms": "the latency distribution: its 0th, 1st, ..., 100th percentile",
}


def evaluate(r: Reply, p: Params) -> Reply:
    store = r["storage"]
    end_to_end = r["sustained"]["changes_per_s"] / store["plain_change_rows_per_s"]
    writer = store["writer_change_rows_per_s"] / store["plain_change_rows_per_s"]
    capacity = min(r["sustained"]["changes_per_s"], r["spread"]["changes_per_s"])
    half = r["latency"]["rate"] <= 0.55 * capacity
    return {
        "definitions": DEFINITIONS,
        "ratio_end_to_end_to_plain": end_to_end,
        "ratio_writer_to_plain": writer,
        "targets": {
            "end_to_end_at_least_half_of_plain": end_to_end >= 0.5,
            "initial_sync_100x1000_within_10s": (
                r["initial_sync"]["complete"] and r["initial_sync"]["seconds"] <= 10.0
                if (p.clusters, p.objects) == (100, 1000)
                else None
            ),
            "p99_sse_under_100ms_at_half_capacity": (
                r["latency"]["p99_ms"] < 100 if half else None
            ),
        },
    }


def _cpu(used: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())


def _split_row(ms: dict[str, float]) -> str:
    return f"p50 {ms['p50']:.1f} ms, p99 {ms['p99']:.1f} ms"


def print_table(r: Reply, p: Params) -> None:
    a, b, c, d = r["initial_sync"], r["sustained"], r["storage"], r["latency"]
    rows = [
        ("(a) initial sync", f"{a['rows']:,} rows in {a['seconds']:.2f} s", "<= 10 s (100x1000)"),
        ("", f"{a['objects_per_s']:,.0f} objects/s", ""),
        ("", f"hub idle after {a['hub_idle_after_s']:.1f} s", ""),
        ("(b) end-to-end ingest", f"{b['changes_per_s']:,.0f} changes/s", ">= plain / 2"),
        ("", f"steady 10-90%: {b['steady_changes_per_s'] or 0:,.0f} changes/s", ""),
        ("", f"{b['committed']:,} committed of {b['mutations']:,} mutations", ""),
        ("", f"in {b['seconds']:.1f} s; CPU s: {_cpu(b['cpu_s'])}", ""),
        ("(b') spread-out changes", f"{r['spread']['changes_per_s']:,.0f} changes/s", ""),
        ("(c) writer", f"{c['writer_change_rows_per_s']:,.0f} change rows/s", ""),
        ("", f"insert: {c['writer_insert_rows_per_s']:,.0f} rows/s", ""),
        ("(c) plain reference", f"{c['plain_change_rows_per_s']:,.0f} change rows/s", ""),
        ("", f"insert: {c['plain_insert_rows_per_s']:,.0f} rows/s", ""),
        ("writer / plain", f"{r['ratio_writer_to_plain']:.2f}", ""),
        ("end-to-end / plain", f"{r['ratio_end_to_end_to_plain']:.2f}", ">= 0.50"),
        ("(d) change-to-SSE", f"p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms", "p99 < 100"),
        ("", f"at {d['achieved_rate']:,.0f}/s, {d['received']:,}/{d['stamped']:,} seen", ""),
        ("  agent + broker", _split_row(d["split"]["agent_and_broker_ms"]), ""),
        ("  hub (ingest to SSE)", _split_row(d["split"]["hub_ms"]), ""),
    ]
    print(
        f"\ningest benchmark ({p.database}): {p.clusters} clusters x {p.objects} objects, "
        f"{p.changes:,} changes"
    )
    for name, value, target in rows:
        print(f"  {name:<24}{value:<48}{target}")
    print(f"  hub relist requests: {r['hub_log']['relist_requests']}")
    for name, met in r["targets"].items():
        print(f"  target {name}: {'met' if met else 'n/a' if met is None else 'MISSED'}")


def quick_variant(path: Path, quick: bool) -> Path:
    """Where a benchmark writes: `name-quick.json` for a `--quick` run, so a quick run never
    replaces the full results that the README and docs/benchmarks.md quote."""
    return path.with_name(f"{path.stem}-quick{path.suffix}") if quick else path


def results_path(p: Params) -> Path:
    path = RESULTS if p.database == "sqlite" else RESULTS.with_name("ingest-postgresql.json")
    return quick_variant(path, p.quick)


def run(p: Params, results: Reply) -> None:
    """Run every phase, filling `results` as it goes (a failure keeps what was measured)."""
    with tempfile.TemporaryDirectory(prefix="ti-bench-") as tmp_name:
        tmp = Path(tmp_name)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        print("(c) storage: the writer and the plain reference...", flush=True)
        results["storage"] = measure_storage(p)
        try:
            if p.database == "postgresql":
                with pg_url() as url:
                    run_live(p, results, tmp, url, lambda: PgProbe(url))
            else:
                url = f"sqlite:///{tmp}/hub.db"
                run_live(p, results, tmp, url, lambda: DbProbe(tmp / "hub.db"))
        finally:
            results["hub_log"] = hub_log_summary(tmp / "hub.log")
            if (tmp / "hub.log").exists():
                shutil.copy(tmp / "hub.log", RESULTS.parent / "hub.log")


@contextlib.contextmanager
def pg_url() -> Iterator[str]:
    """A private database of the local PostgreSQL, dropped afterwards."""
    url = asyncio.run(storage.create_pg_database())
    try:
        yield url
    finally:
        asyncio.run(storage.drop_pg_database(url))


def run_live(
    p: Params, results: Reply, tmp: Path, database_url: str, open_probe: Callable[[], Any]
) -> None:
    """(a), (b) and (d): broker, hub and fleet running."""
    with (
        Mosquitto(data_dir=tmp / "mosquitto") as broker,
        hub_process(broker.url, database_url, tmp / "hub.log") as hub,
    ):
        assert broker.process is not None
        probe = open_probe()
        fleet = FleetHandle(broker.url, p.clusters, p.objects)
        pids = {"hub": hub.pid, "agents": fleet.process.pid or 0, "broker": broker.process.pid}
        cpu = CpuMeter({**pids, "bench": os.getpid()})
        profiles: Reply = results.setdefault("hub_profile", {}) if p.profile else {}

        def phase(name: str) -> AbstractContextManager[None]:
            print(f"{name}...", flush=True)
            if not p.profile:
                return contextlib.nullcontext()
            out = RESULTS.parent / f"hub-{name.split()[0].strip('()')}.folded"
            return sampled(hub.pid, out, profiles.setdefault(name, {}))

        try:
            with phase("(a) initial sync"):
                results["initial_sync"] = measure_sync(fleet, probe, cpu, p.clusters * p.objects)
            with phase("(b) sustained ingest"):
                results["sustained"] = measure_sustained(fleet, probe, cpu, p)
            with phase("(b') capacity for spread-out changes"):
                results["spread"] = measure_spread_capacity(fleet, probe, cpu, hub)
            with phase("(d) change-to-SSE latency"):
                before = cpu.snapshot()
                capacity = min(
                    results["sustained"]["changes_per_s"], results["spread"]["changes_per_s"]
                )
                rate = p.rate or 0.5 * capacity
                results["latency"] = asyncio.run(measure_latency(fleet, hub, broker.url, p, rate))
                results["latency"]["cpu_s"] = cpu.since(before)
        finally:
            fleet.close()
            probe.close()


def write_results(results: Reply, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


def main(argv: Sequence[str] | None = None) -> None:
    params = parse_args(argv)
    tune_gc()  # the storage phase runs here: give it the hub's GC settings
    results: Reply = {"params": asdict(params), "machine": machine_info()}
    try:
        run(params, results)
    except BaseException as exc:
        results["error"] = repr(exc)
        write_results(results, results_path(params))
        raise
    results.update(evaluate(results, params))
    print_table(results, params)
    write_results(results, results_path(params))


if __name__ == "__main__":
    main()
