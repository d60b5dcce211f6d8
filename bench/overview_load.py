"""What open fleet overviews cost the hub at 10,000 clusters, and what the pages weigh.

The clusters are rows, not agents: `tests/fleet_rows.py` writes them through the store
(`InventoryWriter`: a hello and `--objects` objects each, every 50th cluster offline, a
heartbeat of a day so the hub keeps them online) into a fresh SQLite database. Then a
private Mosquitto and
the hub (`python -m app hub`) starts on that database, and this process:

1. measures the hub's CPU (cores = CPU seconds per wall second, from /proc) over
   `--seconds` in four phases: idle; `--rate` changes/s published for clusters of the
   fleet (MQTT, from this process) and no browser; the same with `--clients` overview
   streams (`/ui/stream/fleet`) all on the default view; and on `--clients` distinct
   views (pages, sorts, searches, label filters). It counts what each stream receives;
2. adds a workload placed on every cluster, part way through its rollout, and times the
   store's reads at that size (the overview's read of every cluster, one page's kind
   counts, the workload's state counts and one page of its clusters);
3. starts the hub again, loads the pages and records their size and time, and the idle
   hub's CPU with the workload placed.

With `--compare REV` the same fleet and phases 1a-c run against the hub of git revision
REV (checked out with `git archive` into a temp dir), e.g. the commit before this
overview, whose pulse sent every cluster to every browser.

Prints a table and writes bench/results/overview_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from app.broker import Mosquitto, free_port
from app.informer.objects import EventType
from app.store import rollout
from app.store.db import create_engine
from app.store.fleet import fleet_state, kind_counts
from app.transport import cloudevents, topics
from app.transport.messages import MessageType, watch_events_data
from app.transport.mqtt import LinkOptions, MqttLink

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ingest import AUTH, HUB_ENV, ROOT, CpuMeter, machine_info, quick_variant, write_results

from tests.fleet_rows import SimFleet, write_fleet, write_rollout
from tests.objects import pod

RESULTS = ROOT / "bench" / "results" / "overview_load.json"
WARMUP_S = 3.0
Reply = dict[str, Any]


@dataclass(frozen=True)
class Params:
    clusters: int
    objects: int
    clients: int
    seconds: float
    rate: float
    compare: str | None
    quick: bool = False


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=20, help="objects per cluster")
    parser.add_argument("--clients", type=int, default=50, help="open overviews")
    parser.add_argument("--seconds", type=float, default=30.0, help="each CPU phase")
    parser.add_argument("--rate", type=float, default=200.0, help="changes/s during phases")
    parser.add_argument("--compare", default=None, help="also run the hub of this git rev")
    parser.add_argument("--quick", action="store_true", help="2,000 clusters, 10 s phases")
    a = parser.parse_args(argv)
    if a.quick:
        a.clusters, a.seconds = min(a.clusters, 2_000), min(a.seconds, 10.0)
    return Params(a.clusters, a.objects, a.clients, a.seconds, a.rate, a.compare, a.quick)


# -- the store ----------------------------------------------------------------------------


def populate(path: Path, p: Params) -> Reply:
    """Write the fleet into the migrated database at `path`."""
    fleet = SimFleet(clusters=p.clusters, objects=p.objects, offline_every=50)

    async def fill() -> Reply:
        engine = create_engine(f"sqlite:///{path}")
        started = time.perf_counter()
        await write_fleet(engine, fleet)
        await _checkpoint(engine)
        return {"fleet_s": round(time.perf_counter() - started, 1)}

    return asyncio.run(fill())


def add_rollout(path: Path, p: Params) -> Reply:
    """A workload placed on every cluster, part way through its rollout."""
    fleet = SimFleet(clusters=p.clusters)

    async def fill() -> Reply:
        engine = create_engine(f"sqlite:///{path}")
        started = time.perf_counter()
        names = [fleet.name(i) for i in range(p.clusters)]
        await write_rollout(engine, "fleet-web", names, {"labelSelector": "fleet=sim"})
        await _checkpoint(engine)
        return {"rollout_s": round(time.perf_counter() - started, 1)}

    return asyncio.run(fill())


async def _checkpoint(engine: Any) -> None:
    async with engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    await engine.dispose()


def query_times(path: Path, p: Params, repeat: int = 7) -> Reply:
    """Median and worst milliseconds of the reads the pages make, at this fleet size."""
    fleet = SimFleet(clusters=p.clusters)
    page_names = [fleet.name(i) for i in range(50)]

    async def run() -> Reply:
        engine = create_engine(f"sqlite:///{path}")
        reads = {
            "fleet_state (every cluster, 3 statements)": lambda: fleet_state(
                engine, refused_since=0.0
            ),
            "kind_counts (50 clusters of a page)": lambda: kind_counts(engine, page_names),
            "state_counts (one workload on every cluster)": lambda: rollout.state_counts(
                engine, ["fleet-web"]
            ),
            "delivery_page (first page, problems first)": lambda: rollout.delivery_page(
                engine, "fleet-web", rollout.DeliveryFilter()
            ),
            "delivery_page (state=Available, page 100)": lambda: rollout.delivery_page(
                engine,
                "fleet-web",
                rollout.DeliveryFilter(states=("Available",)),
                offset=4950,
            ),
        }
        out: Reply = {}
        for name, read in reads.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                await read()
                times.append((time.perf_counter() - started) * 1000)
            out[name] = {
                "median_ms": round(statistics.median(times), 1),
                "max_ms": round(max(times), 1),
            }
        await engine.dispose()
        return out

    return asyncio.run(run())


# -- the hub ------------------------------------------------------------------------------


@contextlib.contextmanager
def hub_process(
    root: Path, broker_url: str, database_url: str, log: Path
) -> Iterator[tuple[str, int]]:
    """`python -m app hub` from the checkout at `root`; (base URL, pid) once ready."""
    port = free_port()
    command = [
        *(sys.executable, "-m", "app", "hub", "--broker", broker_url),
        *("--database-url", database_url, "--port", str(port), "--replica-id", "bench-hub"),
    ]
    env = {**os.environ, **HUB_ENV, "PYTHONPATH": str(root)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub was not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def page_weights(base: str) -> Reply:
    """Bytes and milliseconds (median of 5) of the pages, at this fleet size."""
    paths = [
        "/",
        "/?size=200",
        "/?page=100",
        "/?q=sim-0012",
        "/?labelSelector=env%3Dprod&sort=objects",
        "/?sort=rate",
        "/ui/workloads",
        "/ui/workloads/fleet-web",
        "/ui/workloads/fleet-web?state=Available&page=50&size=200",
    ]
    out: Reply = {}
    with httpx.Client(base_url=base, headers=AUTH, timeout=30) as http:
        for path in paths:
            times, size = [], 0
            for _ in range(5):
                started = time.perf_counter()
                response = http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
                size = len(response.content)
            out[path] = {"bytes": size, "median_ms": round(statistics.median(times), 1)}
    return out


# -- load ---------------------------------------------------------------------------------


class Churn:
    """`rate` changes a second, one MODIFIED Pod per message, round-robin over the first
    `spread` clusters of the fleet, published as their agents would."""

    def __init__(self, broker_url: str, fleet: SimFleet, rate: float, spread: int = 2000) -> None:
        self.fleet, self.rate, self.spread = fleet, rate, min(spread, fleet.clusters)
        self.link = MqttLink(LinkOptions(url=broker_url, client_id="bench-churn"), _ignore)
        self.sent = 0

    async def run(self) -> None:
        source = topics.DEFAULT_SOURCE
        loop = asyncio.get_running_loop()
        started, rv = loop.time(), 1_000_000
        async with self.link:
            await asyncio.wait_for(self.link.wait_connected(), 10)
            while True:
                due = int((loop.time() - started) * self.rate)
                while self.sent < due:
                    cluster = self.fleet.name(self.sent % self.spread)
                    rv += 1
                    data = watch_events_data([(EventType.MODIFIED, pod("obj-0000", rv))])
                    event = cloudevents.CloudEvent(
                        MessageType.WATCH_EVENTS, f"agent/{cluster}", cluster, data
                    )
                    await self.link.publish(
                        topics.agent_events(source, cluster), cloudevents.encode(event)
                    )
                    self.sent += 1
                await asyncio.sleep(0.05)


async def _ignore(_topic: str, _payload: bytes) -> None:
    return None


def distinct_views(count: int, clusters: int) -> list[str]:
    """`count` different overview queries: pages, sorts, searches, label filters."""
    pages = max(1, clusters // 50)
    views = [f"page={1 + i % pages}" for i in range(20)]
    views += [f"sort=name&page={1 + i % pages}" for i in range(10)]
    views += [f"sort=rate&page={1 + i}" for i in range(5)]
    views += [f"q=sim-0{i}" for i in range(10)]
    views += [
        "labelSelector=env%3Dprod",
        "labelSelector=env%3Ddev",
        "labelSelector=env%3Dstaging",
        "labelSelector=region%3Deu-west&sort=objects",
        "labelSelector=env%3Dprod%2Cregion%3Dus-east&show=offline",
    ]
    return views[:count]


@dataclass
class StreamStats:
    events: int = 0
    bytes: int = 0


async def hold(http: httpx.AsyncClient, query: str, stats: StreamStats) -> None:
    async with http.stream("GET", f"/ui/stream/fleet?{query}") as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            stats.bytes += len(chunk)
            stats.events += chunk.count(b"event: pulse")


def cores(cpu_s: float, wall_s: float) -> float:
    return round(cpu_s / wall_s, 3)


async def phase(base: str, cpu: CpuMeter, seconds: float, queries: Sequence[str]) -> Reply:
    """The hub's CPU over `seconds` while `queries` overview streams stay open."""
    limits = httpx.Limits(max_connections=len(queries) + 5)
    async with (
        httpx.AsyncClient(base_url=base, headers=AUTH, timeout=None, limits=limits) as http,
        asyncio.TaskGroup() as tasks,
    ):
        stats = [StreamStats() for _ in queries]
        holders = [tasks.create_task(hold(http, q, s)) for q, s in zip(queries, stats, strict=True)]
        await asyncio.sleep(WARMUP_S)
        before, wall = cpu.snapshot(), time.monotonic()
        counted = [(s.events, s.bytes) for s in stats]
        await asyncio.sleep(seconds)
        used, wall = cpu.since(before), time.monotonic() - wall
        got = [(s.events - e, s.bytes - b) for s, (e, b) in zip(stats, counted, strict=True)]
        for holder in holders:
            holder.cancel()
    result: Reply = {
        "streams": len(queries),
        "hub_cores": cores(used["hub"], wall),
        "bench_cores": cores(used["bench"], wall),
    }
    if queries:
        result["events_per_s_per_stream"] = round(sum(e for e, _ in got) / len(got) / wall, 2)
        result["bytes_per_s_per_stream"] = round(sum(b for _, b in got) / len(got) / wall)
        result["bytes_per_s_all_streams"] = round(sum(b for _, b in got) / wall)
    return result


async def phases(base: str, hub_pid: int, broker_url: str, p: Params, *, distinct: bool) -> Reply:
    cpu = CpuMeter({"hub": hub_pid, "bench": os.getpid()})
    fleet = SimFleet(clusters=p.clusters)
    out: Reply = {"idle": await phase(base, cpu, p.seconds, [])}
    churn = Churn(broker_url, fleet, p.rate)
    async with asyncio.TaskGroup() as tasks:
        churning = tasks.create_task(churn.run())
        await asyncio.sleep(WARMUP_S)
        out["changes_no_browser"] = await phase(base, cpu, p.seconds, [])
        out["changes_same_view"] = await phase(base, cpu, p.seconds, [""] * p.clients)
        if distinct:
            views = distinct_views(p.clients, p.clusters)
            out["changes_distinct_views"] = await phase(base, cpu, p.seconds, views)
        churning.cancel()
    out["changes_published"] = churn.sent
    return out


def cpu_run(root: Path, db: Path, broker: Mosquitto, p: Params, *, distinct: bool) -> Reply:
    with hub_process(root, broker.url, f"sqlite:///{db}", db.with_suffix(".log")) as (base, pid):
        return asyncio.run(phases(base, pid, broker.url, p, distinct=distinct))


def pages_run(db: Path, broker: Mosquitto, p: Params) -> Reply:
    """The pages' weights, and the idle hub's CPU, with the rollout in the store."""
    with hub_process(ROOT, broker.url, f"sqlite:///{db}", db.with_suffix(".log")) as (base, pid):
        weights = page_weights(base)
        cpu = CpuMeter({"hub": pid, "bench": os.getpid()})
        idle = asyncio.run(phase(base, cpu, p.seconds, []))
    return {"pages": weights, "idle_with_rollout": idle}


def checkout(rev: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def migrate(root: Path, db: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "app", "db", "upgrade", "--database-url", f"sqlite:///{db}"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
    )


# -- report -------------------------------------------------------------------------------


def print_table(r: Reply) -> None:
    print(f"\nfleet overview at {r['params']['clusters']:,} clusters")
    print("\nstore reads (median / max ms):")
    for name, t in r["queries"].items():
        print(f"  {name:<50} {t['median_ms']:>7} / {t['max_ms']}")
    print("\npages (bytes, median ms):")
    for path, w in r["current"]["pages"].items():
        print(f"  {path:<58} {w['bytes']:>8,}  {w['median_ms']:>7}")
    for label, run in (
        ("this hub", r["current"]),
        (f"hub of {r['params']['compare']}", r.get("before")),
    ):
        if not run:
            continue
        print(f"\nhub CPU, {label} (cores; bytes/s per stream):")
        if "idle_with_rollout" in run:
            placed = run["idle_with_rollout"]["hub_cores"]
            print(f"  {'idle, 1 workload placed':<26}   0 streams  {placed:>6}")
        for name, ph in run["cpu"].items():
            if isinstance(ph, dict):
                extra = f"  {ph.get('bytes_per_s_per_stream', 0):>10,} B/s" if ph["streams"] else ""
                print(f"  {name:<26} {ph['streams']:>3} streams  {ph['hub_cores']:>6}{extra}")


def main(argv: Sequence[str] | None = None) -> None:
    p = parse_args(argv)
    results: Reply = {"params": asdict(p), "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="ti-overview-") as tmp:
        work = Path(tmp)
        db = work / "current.db"
        migrate(ROOT, db)
        results["populate"] = populate(db, p)
        with Mosquitto(data_dir=work / "mosquitto") as broker:
            results["current"] = {"cpu": cpu_run(ROOT, db, broker, p, distinct=True)}
            results["populate"].update(add_rollout(db, p))
            results["queries"] = query_times(db, p)
            results["current"].update(pages_run(db, broker, p))
            if p.compare:
                root = checkout(p.compare, (work / "before").resolve())
                (root / "data").mkdir(exist_ok=True)
                old = work / "before.db"
                migrate(root, old)
                results["populate_before"] = populate(old, p)
                results["before"] = {"cpu": cpu_run(root, old, broker, p, distinct=False)}
    print_table(results)
    write_results(results, quick_variant(RESULTS, p.quick))


if __name__ == "__main__":
    main()
