"""Benchmark 2 (issue #11): thousands of light clusters on one hub.

Processes: a private Mosquitto (`app.broker`, its config as shipped for sessions and
queues, `autosave_interval` as in `deploy/mosquitto.conf`, no connection limit), the hub as
in production (`python -m app hub`, insecure mode so any cluster registers by its hello,
SQLite in a temp dir), and `--processes` swarm processes (`bench/swarm.py`), each running
its share of the clusters as real agents: one MQTT connection, client id and persistent
session per cluster, `--objects` objects each, the default heartbeat (5 s) and resync (30 s).
Every process raises its open-file limit to the hard limit (one socket per connection).

The fleet comes up in `--steps` (e.g. 1000, 5000, 10000). At each step:
- storm: the step's new agents start at once; seconds until the hub's database holds every
  cluster online and every object live (polled from the SQLite file, WAL: no blocking);
- the hub's RSS and CPU (cores = CPU seconds per wall second, /proc) over `--settle`
  seconds of heartbeat load once synced;
- list latency against stored objects: medians of `GET /clusters/{c}/resources` (random
  clusters), `GET /resources?limit=100`, `GET /clusters` (every cluster) and the fleet
  overview page `GET /`.
Then `--steady-seconds` at the last step: RSS and cores sampled every `--sample` seconds,
the drift (last minute's RSS against the first minute's) and its slope.

Prints a table and writes bench/results/fleet_scale.json (fleet_scale-quick.json with
`--quick`: 2,000 clusters in steps of 1,000, 60 s steady).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from app.broker import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_profile import sampled
from ingest import (
    AUTH,
    ROOT,
    CpuMeter,
    DbProbe,
    FleetHandle,
    hub_log_summary,
    hub_process,
    machine_info,
)
from swarm import cluster_name, raise_fd_limit, rss_bytes, run_swarm

Reply = dict[str, Any]
RESULTS = ROOT / "bench" / "results" / "fleet_scale.json"
MB = 1024 * 1024
POLL_S = 0.5


@dataclass(frozen=True)
class Params:
    clusters: int
    steps: tuple[int, ...]
    steady_seconds: float
    objects: int
    processes: int
    heartbeat_s: float
    settle_s: float
    sample_s: float
    step_timeout_s: float
    quick: bool
    profile: bool
    keep_db: str | None


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, help="clusters at the end (default 10000)")
    parser.add_argument("--steps", help="fleet sizes to stop at, e.g. 1000,5000,10000")
    parser.add_argument("--steady-seconds", type=float, help="steady window (default 600)")
    parser.add_argument("--objects", type=int, default=30, help="objects per cluster")
    parser.add_argument("--processes", type=int, default=4, help="swarm processes")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="agents' heartbeat (s)")
    parser.add_argument("--settle", type=float, default=20.0, help="load window per step (s)")
    parser.add_argument("--sample", type=float, default=10.0, help="steady sampling period")
    parser.add_argument("--step-timeout", type=float, default=900.0, help="per step (s)")
    parser.add_argument("--quick", action="store_true", help="2,000 clusters, 60 s steady")
    parser.add_argument(
        "--profile", action="store_true", help="sample the hub with py-spy in the steady window"
    )
    parser.add_argument("--keep-db", help="copy the hub's SQLite file here at the end")
    args = parser.parse_args(argv)
    clusters = args.clusters or (2000 if args.quick else 10_000)
    default_steps = (1000, clusters) if args.quick else (1000, 5000, clusters)
    steps = tuple(int(s) for s in args.steps.split(",")) if args.steps else default_steps
    steps = tuple(sorted({s for s in steps if s <= clusters} | {clusters}))
    return Params(
        clusters=clusters,
        steps=steps,
        steady_seconds=(
            args.steady_seconds
            if args.steady_seconds is not None
            else (60.0 if args.quick else 600.0)
        ),
        objects=args.objects,
        processes=args.processes,
        heartbeat_s=args.heartbeat,
        settle_s=args.settle,
        sample_s=args.sample,
        step_timeout_s=args.step_timeout,
        quick=args.quick,
        profile=args.profile,
        keep_db=args.keep_db,
    )


class SwarmBroker(Mosquitto):
    """The benchmark broker: no connection limit, and sessions saved every 10 s as
    `deploy/mosquitto.conf` does (the test default, every second, costs the broker dearly
    with 10,000 sessions)."""

    def _config(self) -> Path:
        path = super()._config()
        lines = [
            line
            for line in path.read_text().splitlines()
            if not line.startswith(("autosave_interval", "max_connections"))
        ]
        path.write_text("\n".join([*lines, "autosave_interval 10", "max_connections -1"]) + "\n")
        return path


class FleetProbe(DbProbe):
    """The hub's SQLite file, read from outside: clusters online, objects live."""

    def online(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM clusters WHERE online=1").fetchone()[0])


class Swarms:
    """The swarm processes, driven together: each grows by its share of a step."""

    def __init__(self, broker_url: str, p: Params) -> None:
        self.handles = [
            FleetHandle(
                broker_url, 0, 0, target=run_swarm, args=(broker_url, p.objects, p.heartbeat_s)
            )
            for _ in range(p.processes)
        ]
        self.size = 0
        self.objects = 0

    @property
    def pids(self) -> dict[str, int]:
        return {f"swarm{i}": h.process.pid or 0 for i, h in enumerate(self.handles)}

    def all(self, make: Callable[[int], tuple[Any, ...]], tick: Callable[[], None]) -> list[Reply]:
        for i, handle in enumerate(self.handles):
            handle.send(*make(i))
        return [h.reply(600.0, tick) for h in self.handles]

    def grow(self, target: int, tick: Callable[[], None]) -> list[Reply]:
        """Start clusters `size .. target-1`, split in contiguous slices over the processes."""
        n, first = len(self.handles), self.size
        shares = [(target - first) // n + (i < (target - first) % n) for i in range(n)]
        starts = [first + sum(shares[:i]) for i in range(n)]
        replies = self.all(lambda i: ("grow", starts[i], shares[i]), tick)
        self.size = target
        self.objects = sum(r["objects"] for r in replies)
        return replies

    def stats(self) -> Reply:
        replies = self.all(lambda _i: ("stats",), lambda: None)
        return {key: sum(r[key] for r in replies) for key in replies[0]}

    def close(self) -> None:
        for handle in self.handles:
            try:
                handle.close()
            except (TimeoutError, OSError, EOFError):
                handle.process.terminate()


class Sampler:
    """The hub's RSS and cores between two calls."""

    def __init__(self, cpu: CpuMeter) -> None:
        self.cpu = cpu
        self._mark = (time.monotonic(), cpu.snapshot())

    def take(self) -> Reply:
        then, before = self._mark
        now = time.monotonic()
        used = self.cpu.since(before)
        self._mark = (now, self.cpu.snapshot())
        return {
            "t": now,
            "hub_rss_mb": rss_bytes(self.cpu.pids["hub"]) / MB,
            "broker_rss_mb": rss_bytes(self.cpu.pids["broker"]) / MB,
            "cores": {name: round(s / (now - then), 3) for name, s in used.items()},
        }


def wait_synced(
    probe: FleetProbe, clusters: int, objects: int, timeout: float, hub_pid: int
) -> Reply:
    """Seconds until `clusters` are online and `objects` live (None: not within timeout),
    and the hub's peak RSS meanwhile."""
    started = time.monotonic()
    online_s = synced_s = None
    online = rows = peak = 0
    while time.monotonic() - started < timeout:
        peak = max(peak, rss_bytes(hub_pid))
        online, rows = probe.online(), probe.live_rows()
        elapsed = time.monotonic() - started
        if online_s is None and online >= clusters:
            online_s = elapsed
        if synced_s is None and rows >= objects:
            synced_s = elapsed
        if online_s is not None and synced_s is not None:
            break
        time.sleep(POLL_S)
    return {
        "online": online,
        "rows": rows,
        "online_s": online_s,
        "synced_s": synced_s,
        "hub_rss_peak_mb": round(peak / MB, 1),
    }


def median_ms(client: httpx.Client, paths: Sequence[str]) -> float:
    times = []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        times.append(1000 * (time.perf_counter() - started))
        response.raise_for_status()
    return round(statistics.median(times), 1)


def list_latency(base: str, clusters: int, rng: random.Random) -> Reply:
    picks = [cluster_name(rng.randrange(clusters)) for _ in range(21)]
    with httpx.Client(base_url=base, headers=AUTH, timeout=120) as client:
        return {
            "cluster_resources_ms": median_ms(client, [f"/clusters/{c}/resources" for c in picks]),
            "resources_page_ms": median_ms(client, ["/resources?limit=100"] * 5),
            "clusters_ms": median_ms(client, ["/clusters"] * 3),
            "overview_ms": median_ms(client, ["/"] * 5),
        }


def settle(sampler: Sampler, seconds: float, tick: Callable[[], None]) -> Reply:
    sampler.take()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        tick()
    return sampler.take()


def measure_step(
    target: int, swarms: Swarms, probe: FleetProbe, sampler: Sampler, hub_url: str, p: Params
) -> Reply:
    started = time.monotonic()
    replies = swarms.grow(target, lambda: None)
    grown_s = time.monotonic() - started
    sync = wait_synced(
        probe, target, swarms.objects, p.step_timeout_s - grown_s, sampler.cpu.pids["hub"]
    )
    storm_s = time.monotonic() - started
    complete = sync["online_s"] is not None and sync["synced_s"] is not None
    load = settle(sampler, p.settle_s, lambda: None)
    stats = swarms.stats()
    return {
        "clusters": target,
        "objects": swarms.objects,
        "complete": complete,
        "storm_s": round(storm_s, 1) if complete else None,
        "agents_started_s": round(grown_s, 1),
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in sync.items()},
        "hub_rss_mb": round(load["hub_rss_mb"], 1),
        "broker_rss_mb": round(load["broker_rss_mb"], 1),
        "swarm_rss_mb": round(stats["rss"] / MB, 1),
        "cores": load["cores"],
        "agents_connected": stats["connected"],
        "swarm_grow_s": [round(r["grow_s"], 1) for r in replies],
        "latency": list_latency(hub_url, target, random.Random(target)),
    }


def measure_steady(probe: FleetProbe, sampler: Sampler, p: Params) -> Reply:
    samples: list[Reply] = []
    started = time.monotonic()
    sampler.take()
    while time.monotonic() - started < p.steady_seconds:
        time.sleep(min(p.sample_s, max(0.0, p.steady_seconds - (time.monotonic() - started))))
        sample = sampler.take()
        sample["t"] = round(sample["t"] - started, 1)
        sample["online"] = probe.online()
        samples.append(sample)
    rss = [s["hub_rss_mb"] for s in samples]
    window = max(1, int(60 / p.sample_s))
    first, last = statistics.mean(rss[:window]), statistics.mean(rss[-window:])
    times = [s["t"] for s in samples]
    slope = statistics.linear_regression(times, rss).slope * 600 if len(rss) > 1 else 0.0
    hub_cores = [s["cores"]["hub"] for s in samples]
    return {
        "seconds": round(time.monotonic() - started, 1),
        "hub_rss_first_minute_mb": round(first, 1),
        "hub_rss_last_minute_mb": round(last, 1),
        "hub_rss_max_mb": round(max(rss), 1),
        "drift_mb": round(last - first, 1),
        "slope_mb_per_10min": round(slope, 1),
        "hub_cores_mean": round(statistics.mean(hub_cores), 3),
        "hub_cores_max": round(max(hub_cores), 3),
        "broker_cores_mean": round(statistics.mean(s["cores"]["broker"] for s in samples), 3),
        "online_min": min(s["online"] for s in samples),
        "samples": [
            {
                "t": s["t"],
                "hub_rss_mb": round(s["hub_rss_mb"], 1),
                "hub_cores": s["cores"]["hub"],
                "online": s["online"],
            }
            for s in samples
        ],
    }


def run(p: Params, results: Reply) -> None:
    with tempfile.TemporaryDirectory(prefix="ti-fleet-scale-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with (
                SwarmBroker(data_dir=tmp / "mosquitto") as broker,
                hub_process(broker.url, f"sqlite:///{tmp}/hub.db", tmp / "hub.log") as hub,
            ):
                assert broker.process is not None
                probe = FleetProbe(tmp / "hub.db")
                profile: Reply = results.setdefault("hub_profile", {}) if p.profile else {}
                swarms = Swarms(broker.url, p)
                results["fd_limit_swarm"] = swarms.handles[0].ready.get("fd_limit")
                pids = {"hub": hub.pid, "broker": broker.process.pid, **swarms.pids}
                sampler = Sampler(CpuMeter(pids))
                try:
                    for target in p.steps:
                        print(f"step: {target:,} clusters...", flush=True)
                        step = measure_step(target, swarms, probe, sampler, hub.url, p)
                        results["steps"].append(step)
                        print_step(step)
                        if not step["complete"]:
                            print("  not synced within the step's timeout: stopping here")
                            break
                    print(f"steady: {p.steady_seconds:.0f} s...", flush=True)
                    profiled = (
                        sampled(hub.pid, RESULTS.with_name("hub-fleet-steady.folded"), profile)
                        if p.profile
                        else contextlib.nullcontext()
                    )
                    with profiled:
                        results["steady"] = measure_steady(probe, sampler, p)
                finally:
                    swarms.close()
                    probe.close()
        finally:
            if p.keep_db and (tmp / "hub.db").exists():  # the hub checkpointed it on exit
                shutil.copy(tmp / "hub.db", p.keep_db)
            if (tmp / "hub.log").exists():
                results["hub_log"] = hub_log_summary(tmp / "hub.log")
                slow = [
                    line for line in (tmp / "hub.log").read_text().splitlines() if "slow" in line
                ]
                results["hub_log"]["slow_batches"] = len(slow)


def print_step(s: Reply) -> None:
    lat = s["latency"]
    storm = f"{s['storm_s']:.1f} s" if s["storm_s"] is not None else "INCOMPLETE"
    print(
        f"  {s['clusters']:>6,} clusters {s['objects']:>8,} objects  storm {storm:>10}  "
        f"hub {s['hub_rss_mb']:7.1f} MB {s['cores']['hub']:.2f} cores  "
        f"broker {s['broker_rss_mb']:6.1f} MB {s['cores']['broker']:.2f} cores  "
        f"lists: cluster {lat['cluster_resources_ms']} ms, /resources {lat['resources_page_ms']} "
        f"ms, /clusters {lat['clusters_ms']} ms, overview {lat['overview_ms']} ms",
        flush=True,
    )


def print_table(r: Reply) -> None:
    print(f"\nfleet scale: {r['params']['clusters']:,} clusters x {r['params']['objects']} objects")
    for step in r["steps"]:
        print_step(step)
    steady = r.get("steady")
    if steady:
        print(
            f"  steady {steady['seconds']:.0f} s: hub {steady['hub_cores_mean']:.2f} cores "
            f"(max {steady['hub_cores_max']:.2f}), RSS {steady['hub_rss_first_minute_mb']:.0f} "
            f"-> {steady['hub_rss_last_minute_mb']:.0f} MB (max {steady['hub_rss_max_mb']:.0f}, "
            f"slope {steady['slope_mb_per_10min']:+.1f} MB/10 min), "
            f"online min {steady['online_min']:,}"
        )


def results_path(p: Params) -> Path:
    return RESULTS.with_name("fleet_scale-quick.json") if p.quick else RESULTS


def write_results(results: Reply, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {path.relative_to(ROOT)}")


def main(argv: Sequence[str] | None = None) -> None:
    params = parse_args(argv)
    fd_limit = raise_fd_limit()  # inherited by the broker and the hub
    results: Reply = {
        "params": asdict(params),
        "machine": {**machine_info(), "cpu_count": os.cpu_count(), "fd_limit": fd_limit},
        "steps": [],
    }
    try:
        run(params, results)
    except BaseException as exc:
        results["error"] = repr(exc)
        write_results(results, results_path(params))
        raise
    print_table(results)
    write_results(results, results_path(params))


if __name__ == "__main__":
    main()
