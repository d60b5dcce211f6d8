"""Stream fan-out: many API SSE streams (`GET /stream`) while changes flow in through agents,
and many open dashboards at fleet size.

Processes: a private Mosquitto, the hub as in production (`python -m app hub` on SQLite,
`bench/ingest.py`'s `hub_process`), the agents (`bench/fleet.py`, one child process,
`--clusters` simulated clusters), and `--readers` reader processes holding the streams
(raw asyncio sockets: no HTTP library, the stamp found with one regex), so the readers'
CPU is theirs and measured apart from the hub's.

Phases, for each `--watch` mode:
  - `all`: every stream watches everything, so each change goes to every stream (the
    fan-out's worst case: changes/s x streams events/s);
  - `cluster`: stream i watches cluster i mod clusters (`?cluster=`), so each change goes
    to streams / clusters of them;
the streams open, then the agents make `--rate` changes/s for `--seconds`, each stamped with
the wall-clock time (`bench/fleet.py` `stamp`); per stream, lag = receive time - stamp.
Reported: events delivered per second in all (stamped changes received, summed over the
streams), the share of the expected, lag p50/p99 over every stream, streams the hub ended
(too slow for the feed), and CPU cores of the hub, agents, broker and readers.

Then dashboards: `bench/overview_load.py` with `--dashboards` overview streams on a fleet of
`--dashboard-clusters` clusters written straight into SQLite (its phases idle, changes
without browsers, changes with every overview open on one view).

Prints a table and writes bench/results/fanout.json (`--quick`: fanout-quick.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.broker import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overview_load
from fleet import T0_ANNOTATION, cluster_name
from hub_profile import sampled
from ingest import (
    AUTH,
    BENCH_TOKEN,
    ROOT,
    CpuMeter,
    FleetHandle,
    Hub,
    hub_log_summary,
    hub_process,
    machine_info,
    write_results,
)

STAMP = re.compile(re.escape(f'"{T0_ANNOTATION}":"').encode() + rb"([0-9.]+)")
HISTOGRAM_MS = 60_000
"""Lag histogram: 1 ms buckets, the last holds everything slower."""
QUIET_S = 1.0
"""After the changes stop, the readers are done when nothing arrived for this long."""
Reply = dict[str, Any]


@dataclass(frozen=True)
class Params:
    clusters: int
    objects: int
    streams: int
    readers: int
    rate: float
    seconds: float
    watch: tuple[str, ...]
    dashboards: int
    dashboard_clusters: int
    dashboard_seconds: float
    quick: bool
    profile: bool


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=100, help="simulated clusters")
    parser.add_argument("--objects", type=int, default=20, help="objects per cluster")
    parser.add_argument("--streams", type=int, help="API SSE streams (default 1000)")
    parser.add_argument("--readers", type=int, default=2, help="reader processes")
    parser.add_argument("--rate", type=float, default=1000.0, help="changes/s")
    parser.add_argument("--seconds", type=float, help="changes for this long (default 10)")
    parser.add_argument("--watch", default="all,cluster", help="modes: all, cluster")
    parser.add_argument("--dashboards", type=int, default=200, help="overview streams (0: none)")
    parser.add_argument("--dashboard-clusters", type=int, help="default 10000")
    parser.add_argument("--dashboard-seconds", type=float, help="each phase (default 20)")
    parser.add_argument("--quick", action="store_true", help="200 streams, 2,000 clusters")
    parser.add_argument("--profile", action="store_true", help="sample the hub with py-spy")
    a = parser.parse_args(argv)
    q = a.quick
    return Params(
        clusters=a.clusters,
        objects=a.objects,
        streams=a.streams or (200 if q else 1000),
        readers=a.readers,
        rate=a.rate,
        seconds=a.seconds or (5.0 if q else 10.0),
        watch=tuple(w.strip() for w in a.watch.split(",") if w.strip()),
        dashboards=a.dashboards,
        dashboard_clusters=a.dashboard_clusters or (2000 if q else 10_000),
        dashboard_seconds=a.dashboard_seconds or (8.0 if q else 20.0),
        quick=q,
        profile=a.profile,
    )


# -- the readers (child processes) --------------------------------------------------------


@dataclass
class Tally:
    events: int = 0
    """Stamped change events received."""
    bytes: int = 0
    ended: int = 0
    """Streams the hub ended (each is reopened without a Last-Event-ID)."""
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_MS)

    def clear(self) -> None:
        """Zero in place: the streams' read loops hold this tally."""
        self.events = self.bytes = self.ended = 0
        self.histogram[:] = [0] * HISTOGRAM_MS

    def reply(self) -> Reply:
        lags = {ms: n for ms, n in enumerate(self.histogram) if n}
        return {"events": self.events, "bytes": self.bytes, "ended": self.ended, "lags": lags}


class Readers:
    """Holds one stream per path over raw sockets, and tallies what they receive."""

    def __init__(self, url: str, paths: list[str]) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.paths = paths
        self.tally = Tally()
        self.open = 0
        self._tasks: list[asyncio.Task[None]] = []

    def _request(self, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {BENCH_TOKEN}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    async def hold(self, path: str) -> None:
        while True:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
            opened = False
            try:
                writer.write(self._request(path))
                head = await reader.readuntil(b"\r\n\r\n")
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    raise RuntimeError(f"{path}: {head[:200]!r}")
                self.open, opened = self.open + 1, True
                await self._read(reader)
            finally:
                self.open -= opened
                writer.close()
            self.tally.ended += 1

    async def _read(self, reader: asyncio.StreamReader) -> None:
        tally, histogram, last = self.tally, self.tally.histogram, HISTOGRAM_MS - 1
        rest = b""
        while chunk := await reader.read(1 << 18):
            now = time.time()
            tally.bytes += len(chunk)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1  # a stamp split between two reads waits for the next
            rest = data[cut:]
            for match in STAMP.finditer(data, 0, cut):
                histogram[min(int((now - float(match[1])) * 1000), last)] += 1
                tally.events += 1

    async def start(self) -> Reply:
        self._tasks = [asyncio.create_task(self.hold(p)) for p in self.paths]
        deadline = time.monotonic() + 120
        while self.open < len(self.paths) and time.monotonic() < deadline:
            for task in self._tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.05)
        return {"open": self.open}

    async def stop(self) -> Reply:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return {"open": self.open}


async def _serve_readers(conn: Connection, url: str, paths: list[str]) -> None:
    readers = Readers(url, paths)
    conn.send({"ready": True})
    while True:
        command, *_ = await asyncio.to_thread(conn.recv)
        match command:
            case "start":
                reply = await readers.start()
            case "reset":
                readers.tally.clear()
                reply = {}
            case "stats":
                reply = {**readers.tally.reply(), "open": readers.open}
            case "stop":
                conn.send(await readers.stop())
                return
            case _:
                reply = {"error": f"unknown command {command!r}"}
        conn.send(reply)


def run_readers(conn: Connection, url: str, paths: list[str]) -> None:
    """The reader process' entry point."""
    asyncio.run(_serve_readers(conn, url, paths))


class ReaderHandle(FleetHandle):
    """The parent's side of one reader process (the fleet's command protocol)."""

    def __init__(self, url: str, paths: list[str]) -> None:  # the fleet's own start is not wanted
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=run_readers, args=(child, url, paths), daemon=True)
        self.process.start()
        self._wait(self._conn, 60.0)


# -- API streams --------------------------------------------------------------------------


def stream_paths(p: Params, watch: str) -> list[str]:
    if watch == "all":
        return ["/stream"] * p.streams
    if watch == "cluster":
        return [f"/stream?cluster={cluster_name(i % p.clusters)}" for i in range(p.streams)]
    raise ValueError(f"unknown watch mode {watch!r}")


def expected_events(p: Params, watch: str, stamped: int) -> float:
    return stamped * p.streams / (1 if watch == "all" else p.clusters)


def merged(replies: list[Reply]) -> Reply:
    histogram = [0] * HISTOGRAM_MS
    for r in replies:
        for ms, n in r["lags"].items():
            histogram[int(ms)] += n
    return {
        "events": sum(r["events"] for r in replies),
        "bytes": sum(r["bytes"] for r in replies),
        "ended": sum(r["ended"] for r in replies),
        "histogram": histogram,
    }


def histogram_percentile(histogram: list[int], pct: float) -> float | None:
    total = sum(histogram)
    if not total:
        return None
    wanted, seen = total * pct / 100, 0
    for ms, n in enumerate(histogram):
        seen += n
        if seen >= wanted:
            return float(ms)
    return float(len(histogram) - 1)


def profiled(hub: Hub, p: Params, watch: str, summary: Reply) -> AbstractContextManager[None]:
    if not p.profile:
        return contextlib.nullcontext()
    return sampled(hub.pid, results_path(p).with_name(f"hub-fanout-{watch}.folded"), summary)


def measure_streams(fleet: FleetHandle, hub: Hub, cpu: CpuMeter, p: Params, watch: str) -> Reply:
    paths = stream_paths(p, watch)
    profile: Reply = {}
    share = -(-len(paths) // p.readers)
    readers = [ReaderHandle(hub.url, paths[i : i + share]) for i in range(0, len(paths), share)]
    try:
        cpu.pids.update({f"readers-{i}": r.process.pid or 0 for i, r in enumerate(readers)})
        opened = sum(r.call("start", timeout=180)["open"] for r in readers)
        cpu.wait_idle("hub", 60, lambda: None)
        for r in readers:
            r.call("reset")
        before, started = cpu.snapshot(), time.monotonic()
        with profiled(hub, p, watch, profile):
            stamped = fleet.call("stamp", p.rate, p.seconds)
        events, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < QUIET_S and time.monotonic() - started < 120:
            now = sum(r.call("stats")["events"] for r in readers)
            if now != events:
                events, quiet_since = now, time.monotonic()
            time.sleep(0.2)
        wall = quiet_since - started
        used = cpu.since(before)
        got = merged([r.call("stats") for r in readers])
    finally:
        for r in readers:
            r.close()
        for i in range(len(readers)):
            cpu.pids.pop(f"readers-{i}", None)
    expected = expected_events(p, watch, stamped["stamped"])
    cores = {name: round(s / wall, 3) for name, s in used.items()}
    return {
        "watch": watch,
        "streams": len(paths),
        "opened": opened,
        "stamped": stamped["stamped"],
        "changes_per_s": round(stamped["stamped"] / stamped["seconds"], 1),
        "seconds": round(wall, 2),
        "events": got["events"],
        "expected_events": round(expected),
        "delivered_share": round(got["events"] / expected, 4) if expected else None,
        "events_per_s": round(got["events"] / wall),
        "bytes_per_s": round(got["bytes"] / wall),
        "streams_ended_by_hub": got["ended"],
        "lag_p50_ms": histogram_percentile(got["histogram"], 50),
        "lag_p99_ms": histogram_percentile(got["histogram"], 99),
        "lag_max_ms": max((ms for ms, n in enumerate(got["histogram"]) if n), default=None),
        "cores": cores,
        "reader_cores": round(sum(v for k, v in cores.items() if k.startswith("readers")), 3),
        "cpu_s": used,
        "load_avg_after": os.getloadavg(),
        **({"hub_profile": profile} if p.profile else {}),
    }


def wait_online(hub: Hub, clusters: int, timeout: float = 120) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=hub.url, headers=AUTH, timeout=30) as http:
        while time.monotonic() - started < timeout:
            items = http.get("/clusters").raise_for_status().json()["items"]
            if sum(1 for c in items if c["online"]) >= clusters:
                return
            time.sleep(0.5)
    raise TimeoutError(f"not every cluster came online within {timeout} s")


def run_streams(p: Params, results: Reply, tmp: Path) -> None:
    with (
        Mosquitto(data_dir=tmp / "mosquitto") as broker,
        hub_process(broker.url, f"sqlite:///{tmp}/hub.db", tmp / "hub.log") as hub,
    ):
        assert broker.process is not None
        fleet = FleetHandle(broker.url, p.clusters, p.objects)
        try:
            cpu = CpuMeter(
                {"hub": hub.pid, "agents": fleet.process.pid or 0, "broker": broker.process.pid}
            )
            fleet.call("start")
            wait_online(hub, p.clusters)
            cpu.wait_idle("hub", 120, lambda: None)
            for watch in p.watch:
                print(f"{p.streams} streams watching {watch}...", flush=True)
                results.setdefault("streams", {})[watch] = measure_streams(
                    fleet, hub, cpu, p, watch
                )
        finally:
            fleet.close()


# -- dashboards ---------------------------------------------------------------------------


def run_dashboards(p: Params, tmp: Path) -> Reply:
    """`bench/overview_load.py`'s fleet and CPU phases with `p.dashboards` overviews."""
    op = overview_load.Params(
        clusters=p.dashboard_clusters,
        objects=20,
        clients=p.dashboards,
        seconds=p.dashboard_seconds,
        rate=200.0,
        compare=None,
    )
    db = tmp / "overview.db"
    overview_load.migrate(ROOT, db)
    out: Reply = {"params": asdict(op), "populate": overview_load.populate(db, op)}
    with Mosquitto(data_dir=tmp / "overview-mosquitto") as broker:
        out["cpu"] = overview_load.cpu_run(ROOT, db, broker, op, distinct=False)
    return out


# -- report -------------------------------------------------------------------------------


def print_table(r: Reply, p: Params) -> None:
    print(f"\nstream fan-out: {p.streams} API streams, {p.rate:,.0f} changes/s through agents")
    header = ("watch", "events/s", "share", "p50 ms", "p99 ms", "ended", "hub", "readers")
    print("  " + "".join(f"{h:<12}" for h in header))
    for watch, s in r.get("streams", {}).items():
        cells = [
            watch,
            f"{s['events_per_s']:,}",
            f"{s['delivered_share']:.3f}",
            str(s["lag_p50_ms"]),
            str(s["lag_p99_ms"]),
            str(s["streams_ended_by_hub"]),
            f"{s['cores']['hub']:.2f}",
            f"{s['reader_cores']:.2f}",
        ]
        print("  " + "".join(f"{c:<12}" for c in cells))
    d = r.get("dashboards")
    if d:
        print(f"\n{p.dashboards} overviews at {p.dashboard_clusters:,} clusters (hub cores):")
        for name, ph in d["cpu"].items():
            if isinstance(ph, dict):
                rate = f"  {ph.get('bytes_per_s_all_streams', 0):>10,} B/s" if ph["streams"] else ""
                print(f"  {name:<22} {ph['streams']:>4} streams  {ph['hub_cores']:>6}{rate}")


def results_path(p: Params) -> Path:
    return ROOT / "bench" / "results" / ("fanout-quick.json" if p.quick else "fanout.json")


def main(argv: Sequence[str] | None = None) -> None:
    p = parse_args(argv)
    results: Reply = {"params": asdict(p), "machine": machine_info()}
    try:
        with tempfile.TemporaryDirectory(prefix="ti-fanout-") as tmp_name:
            tmp = Path(tmp_name)
            try:
                if p.watch:
                    run_streams(p, results, tmp)
            finally:
                with contextlib.suppress(OSError):
                    results["hub_log"] = hub_log_summary(tmp / "hub.log")
                    shutil.copy(tmp / "hub.log", results_path(p).with_name("hub-fanout.log"))
            if p.dashboards:
                print(f"{p.dashboards} overviews at {p.dashboard_clusters:,} clusters...")
                results["dashboards"] = run_dashboards(p, tmp)
    except BaseException as exc:
        results["error"] = repr(exc)
        write_results(results, results_path(p))
        raise
    print_table(results, p)
    write_results(results, results_path(p))


if __name__ == "__main__":
    main()
