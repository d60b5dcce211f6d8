"""Rollout: one workload placed on N simulated clusters, and then changed; how long until
every cluster has applied it, and what the hub spends.

Processes: a private Mosquitto (`app.broker`), the hub as in production (`python -m app
hub`, SQLite in a temp dir, `bench/ingest.py`'s `hub_process`), and the agents, real
`Agent`s on `SimulatedCluster`s, spread over `--processes` child processes
(`bench/fleet.py`), every cluster labelled `bench=1`. This process only talks REST.

Phases:
  1. the agents start; wait until the hub lists every cluster online and is idle again;
  2. rollout: `POST /workloads` (a Deployment and a ConfigMap, placement `bench=1`), then
     `GET /workloads/{name}` every `--poll` seconds: time until every delivery is sent
     (Delivered or further), Applied, and Available, with the count at each sample (the
     completion curve), and the hub's CPU (cores = CPU seconds / wall seconds) until then;
  3. update: `PUT /workloads/{name}` with a changed manifest, measured the same way; a
     delivery counts once it has acknowledged the new version.

The poll costs the hub: each answer carries every cluster's delivery (`poll_ms` in the
results is its median time, about 70 ms at 1,000 clusters). At the 10 Hz first used it took
0.7 of the hub's 0.8 cores during the rollout, so the default is every 0.5 s: the times are
then up to 0.5 s late, and the hub's CPU is mostly the rollout's.

Prints a table and writes bench/results/rollout.json (`--quick`: rollout-quick.json).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
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
    FleetHandle,
    Hub,
    hub_log_summary,
    hub_process,
    machine_info,
    write_results,
)

WORKLOAD = "bench-rollout"
SELECTOR = "bench=1"
"""Every fleet agent carries the label bench=1 (`bench/fleet.py`)."""
Reply = dict[str, Any]


@dataclass(frozen=True)
class Params:
    clusters: int
    objects: int
    processes: int
    poll_s: float
    timeout_s: float
    quick: bool
    profile: bool


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, help="simulated clusters (default 1000)")
    parser.add_argument("--objects", type=int, default=10, help="objects per cluster")
    parser.add_argument("--processes", type=int, help="agent processes (default 4)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    parser.add_argument("--quick", action="store_true", help="200 clusters in 2 processes")
    parser.add_argument("--profile", action="store_true", help="sample the hub with py-spy")
    a = parser.parse_args(argv)
    return Params(
        clusters=a.clusters or (200 if a.quick else 1000),
        objects=a.objects,
        processes=a.processes or (2 if a.quick else 4),
        poll_s=a.poll,
        timeout_s=a.timeout,
        quick=a.quick,
        profile=a.profile,
    )


def manifests(version: int) -> list[Reply]:
    labels = {"app": "bench-web"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "bench-web", "namespace": "bench", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": f"nginx:1.{version}"}]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "bench-web", "namespace": "bench"},
            "data": {"version": str(version)},
        },
    ]


def workload_body(version: int) -> Reply:
    return {
        "name": WORKLOAD,
        "manifests": manifests(version),
        "placement": {"labelSelector": SELECTOR},
    }


# -- the fleet ----------------------------------------------------------------------------


def start_fleets(broker_url: str, p: Params) -> list[FleetHandle]:
    """`p.processes` fleet processes, each with its own range of clusters, started together."""
    share, extra = divmod(p.clusters, p.processes)
    sizes = [share + (1 if i < extra else 0) for i in range(p.processes)]
    firsts = [sum(sizes[:i]) for i in range(p.processes)]
    with ThreadPoolExecutor(p.processes) as pool:
        fleets = list(
            pool.map(
                lambda f: FleetHandle(broker_url, sizes[f], p.objects, firsts[f]),
                range(p.processes),
            )
        )
        list(pool.map(lambda fleet: fleet.call("start"), fleets))
    return fleets


def wait_online(http: httpx.Client, clusters: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = http.get("/clusters").raise_for_status().json()["items"]
        if sum(1 for c in items if c["online"]) >= clusters:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"not every cluster came online within {timeout} s")


# -- a phase ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float
    sent: int
    applied: int
    available: int


def count(workload: Reply) -> Sample:
    """Deliveries of the workload's current version: sent, applied, available."""
    version = workload["version"]
    sent = applied = available = 0
    for d in workload["clusters"]:
        if d["versionSent"] >= version:
            sent += 1
        if (d["versionApplied"] or 0) >= version and d["state"] in ("Applied", "Available"):
            applied += 1
            available += d["state"] == "Available"
    return Sample(0.0, sent, applied, available)


def measure(http: httpx.Client, cpu: CpuMeter, p: Params, *, update: bool) -> Reply:
    """Write the workload (create, or a new version), then sample until all are Available."""
    before, started = cpu.snapshot(), time.monotonic()
    if update:
        written = http.put(f"/workloads/{WORKLOAD}", json=workload_body(2))
    else:
        written = http.post("/workloads", json=workload_body(1))
    written.raise_for_status()
    write_ms = (time.monotonic() - started) * 1000
    curve: list[Sample] = []
    poll_ms: list[float] = []
    reached: dict[str, float | None] = {"sent": None, "applied": None, "available": None}
    while time.monotonic() - started < p.timeout_s:
        asked = time.monotonic()
        s = count(http.get(f"/workloads/{WORKLOAD}").raise_for_status().json())
        poll_ms.append((time.monotonic() - asked) * 1000)
        sample = Sample(round(time.monotonic() - started, 3), s.sent, s.applied, s.available)
        curve.append(sample)
        for name in reached:
            if reached[name] is None and getattr(sample, name) >= p.clusters:
                reached[name] = sample.t
        if reached["available"] is not None:
            break
        time.sleep(max(0.0, p.poll_s - (time.monotonic() - asked)))
    wall = time.monotonic() - started
    used = cpu.since(before)
    return {
        "write_ms": round(write_ms, 1),
        "all_sent_s": reached["sent"],
        "all_applied_s": reached["applied"],
        "all_available_s": reached["available"],
        "seconds": round(wall, 3),
        "cores": {name: round(s / wall, 3) for name, s in used.items()},
        "cpu_s": used,
        "poll_ms": round(statistics.median(poll_ms), 1),
        "curve_columns": ["t_s", "sent", "applied", "available"],
        "curve": [[c.t, c.sent, c.applied, c.available] for c in curve],
    }


# -- report -------------------------------------------------------------------------------


def agent_cores(cores: Reply) -> float:
    return round(sum(v for k, v in cores.items() if k.startswith("agents")), 3)


def print_table(r: Reply, p: Params) -> None:
    print(f"\nrollout: 1 workload on {p.clusters:,} clusters ({p.processes} agent processes)")
    print(f"  clusters online after {r['fleet']['online_s']:.1f} s")
    header = ("phase", "all sent", "all Applied", "all Available", "hub cores", "agents")
    print("  " + "".join(f"{h:<15}" for h in header))
    for name in ("rollout", "update"):
        ph = r.get(name)
        if not ph:
            continue
        cells = [
            name,
            *(
                "-" if ph[k] is None else f"{ph[k]:.2f} s"
                for k in ("all_sent_s", "all_applied_s", "all_available_s")
            ),
            f"{ph['cores']['hub']:.2f}",
            f"{agent_cores(ph['cores']):.2f}",
        ]
        print("  " + "".join(f"{c:<15}" for c in cells))
    goal = r.get("rollout", {}).get("all_applied_s")
    print(f"  goal: all Applied < 10 s: {'met' if goal is not None and goal < 10 else 'MISSED'}")


def results_path(p: Params) -> Path:
    return ROOT / "bench" / "results" / ("rollout-quick.json" if p.quick else "rollout.json")


def run(p: Params, results: Reply) -> None:
    with tempfile.TemporaryDirectory(prefix="ti-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with (
                Mosquitto(data_dir=tmp / "mosquitto") as broker,
                hub_process(broker.url, f"sqlite:///{tmp}/hub.db", tmp / "hub.log") as hub,
            ):
                run_live(p, results, broker, hub)
        finally:
            results["hub_log"] = hub_log_summary(tmp / "hub.log")
            if (tmp / "hub.log").exists():
                shutil.copy(tmp / "hub.log", results_path(p).with_name("hub-rollout.log"))


def profiled(hub: Hub, p: Params, name: str, results: Reply) -> AbstractContextManager[None]:
    if not p.profile:
        return contextlib.nullcontext()
    out = ROOT / "bench" / "results" / f"hub-rollout-{name}.folded"
    return sampled(hub.pid, out, results.setdefault("hub_profile", {}).setdefault(name, {}))


def run_live(p: Params, results: Reply, broker: Mosquitto, hub: Hub) -> None:
    assert broker.process is not None
    print(f"starting {p.clusters} agents in {p.processes} processes...", flush=True)
    started = time.monotonic()
    fleets = start_fleets(broker.url, p)
    try:
        pids = {f"agents-{i}": f.process.pid or 0 for i, f in enumerate(fleets)}
        cpu = CpuMeter({"hub": hub.pid, "broker": broker.process.pid, **pids})
        with httpx.Client(base_url=hub.url, headers=AUTH, timeout=30) as http:
            online = wait_online(http, p.clusters, p.timeout_s)
            settle = cpu.wait_idle("hub", 120, lambda: None)
            results["fleet"] = {
                "online_s": round(time.monotonic() - started - settle, 1),
                "hub_idle_after_s": round(time.monotonic() - started, 1),
                "waited_online_s": round(online, 1),
            }
            for name, update in (("rollout", False), ("update", True)):
                print(f"{name}...", flush=True)
                with profiled(hub, p, name, results):
                    results[name] = measure(http, cpu, p, update=update)
                cpu.wait_idle("hub", 60, lambda: None)
    finally:
        with ThreadPoolExecutor(len(fleets)) as pool:
            list(pool.map(lambda fleet: fleet.close(), fleets))


def main(argv: Sequence[str] | None = None) -> None:
    p = parse_args(argv)
    results: Reply = {"params": asdict(p), "machine": machine_info()}
    try:
        run(p, results)
    except BaseException as exc:
        results["error"] = repr(exc)
        write_results(results, results_path(p))
        raise
    print_table(results, p)
    write_results(results, results_path(p))


if __name__ == "__main__":
    main()
