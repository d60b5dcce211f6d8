"""`make bench` (2/2): what open dashboards cost the hub's CPU.

Processes as in `bench/ingest.py`: a private Mosquitto, the hub (`python -m app hub`, SQLite
in a temp dir), every simulated agent in one child process (`bench/fleet.py`). A thread of
this process drives `--rate` changes/s through the agents (`mutate`, spread over the
clusters) for the whole run; after the initial sync:
  (A) no browsers: the hub's CPU (cores = CPU seconds per wall second) over `--seconds`;
  (B) `--clients` SSE streams opened at once from this process, the mix open dashboards
      hold: 50% fleet overview (/ui/stream/fleet), 40% cluster views (/ui/stream/rows,
      spread over the clusters), 10% live feed (/ui/stream/events); events are counted
      as they arrive, and the hub's CPU is measured again over `--seconds` while every
      stream stays open. Delivered events are checked against what the hub committed
      (a dropped or lagging stream shows), as is this process' own CPU.
Prints a table and writes bench/results/dashboards.json. With `--profile` (py-spy in the
venv), the hub is sampled in each phase: bench/results/dashboards-hub-<phase>.folded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from app.broker import Mosquitto

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import cluster_name
from hub_profile import sampled
from ingest import (
    AUTH,
    ROOT,
    CpuMeter,
    DbProbe,
    FleetHandle,
    Hub,
    hub_log_summary,
    hub_process,
    machine_info,
    measure_sync,
    quick_variant,
    write_results,
)

RESULTS = ROOT / "bench" / "results" / "dashboards.json"
TICK_S = 0.05
"""The change driver's pacing: `rate * TICK_S` mutations per call into the fleet."""
WARMUP_S = 2.0
"""Before (A): the change rate settles; before (B): every stream has replayed and settled."""
OPEN_TIMEOUT_S = 30.0
DELIVERED_MIN = 0.95
"""A kind of stream whose clients received fewer of the events due in (B) is lagging."""
MIX = (("fleet", 0.5), ("rows", 0.4), ("events", 0.1))
EVENT_MARK = b"\nevent: "
"""Starts every SSE event the dashboard streams send (data lines never hold a newline)."""
ITEM_MARKS = {"fleet": EVENT_MARK, "rows": b"<tr ", "events": b"<li "}
"""What to count per stream kind: one change may share an SSE message with others (the hub
batches what waits for a browser), so rows and feed items are counted, not messages."""
Reply = dict[str, Any]


@dataclass(frozen=True)
class Params:
    clusters: int
    objects: int
    rate: float
    clients: int
    seconds: float
    quick: bool
    profile: bool


def parse_args(argv: Sequence[str] | None = None) -> Params:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, help="simulated clusters (default 10)")
    parser.add_argument("--objects", type=int, help="objects per cluster (default 300)")
    parser.add_argument("--rate", type=float, default=200, help="changes/s, whole run")
    parser.add_argument("--clients", type=int, help="open SSE streams in (B) (default 200)")
    parser.add_argument("--seconds", type=float, help="length of each phase (default 15)")
    parser.add_argument("--quick", action="store_true", help="a small run (5 x 100, 50, 5 s)")
    parser.add_argument("--profile", action="store_true", help="sample the hub with py-spy")
    args = parser.parse_args(argv)

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if args.quick else full)

    return Params(
        clusters=pick(args.clusters, 10, 5),
        objects=pick(args.objects, 300, 100),
        rate=args.rate,
        clients=pick(args.clients, 200, 50),
        seconds=pick(args.seconds, 15.0, 5.0),
        quick=args.quick,
        profile=args.profile,
    )


class Probe(DbProbe):
    def changes_by_cluster(self, after: int, upto: int) -> Counter[str]:
        rows = self._conn.execute(
            "SELECT cluster, count(*) FROM changes WHERE revision > ? AND revision <= ?"
            " GROUP BY cluster",
            (after, upto),
        )
        return Counter({cluster: int(n) for cluster, n in rows})


class SteadyChanges:
    """`rate` mutations a second through the fleet, from a thread, while the block runs."""

    def __init__(self, fleet: FleetHandle, rate: float) -> None:
        self.fleet, self.rate, self.made = fleet, rate, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="changes", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.wait(TICK_S):
                due = int((time.monotonic() - started) * self.rate) - self.made
                if due > 0:
                    self.made += self.fleet.call("churn", due, 1)["mutations"]
        except BaseException as exc:
            self.error = exc

    def __enter__(self) -> SteadyChanges:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class Stream:
    """One open dashboard's SSE stream: events counted as the bytes arrive."""

    kind: str
    path: str
    cluster: str | None = None
    opened: bool = False
    events: int = 0
    ended: str | None = None
    """Why the stream ended before the bench closed it (a dropped client)."""

    async def read(self, client: httpx.AsyncClient) -> None:
        try:
            async with client.stream("GET", self.path) as response:
                response.raise_for_status()
                self.opened = True
                mark = ITEM_MARKS[self.kind]
                tail = b"\n"  # the first event starts the stream
                async for chunk in response.aiter_raw():
                    data = tail + chunk
                    self.events += data.count(mark)
                    tail = data[1 - len(mark) :]
            self.ended = "closed by the hub"
        except httpx.HTTPError as exc:
            self.ended = repr(exc)


def plan_streams(p: Params, since: int) -> list[Stream]:
    counts = [round(share * p.clients) for _, share in MIX[:-1]]
    counts.append(p.clients - sum(counts))
    streams: list[Stream] = []
    for (kind, _), count in zip(MIX, counts, strict=True):
        for i in range(count):
            if kind == "fleet":
                streams.append(Stream(kind, "/ui/stream/fleet"))
            elif kind == "rows":
                c = cluster_name(i % p.clusters)
                streams.append(Stream(kind, f"/ui/stream/rows?cluster={c}&since={since}", c))
            else:
                streams.append(Stream(kind, f"/ui/stream/events?since={since}"))
    return streams


def expected_events(
    streams: Sequence[Stream], seconds: float, changes: Counter[str]
) -> Counter[str]:
    """What each kind of stream should have received in a window: a pulse a second per
    overview, the cluster's changes per cluster view, every change per live feed."""
    expected: Counter[str] = Counter()
    for s in streams:
        if s.kind == "fleet":
            expected[s.kind] += round(seconds)
        elif s.kind == "rows":
            expected[s.kind] += changes[s.cluster or ""]
        else:
            expected[s.kind] += changes.total()
    return expected


async def sse_gauge(client: httpx.AsyncClient) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        for line in (await client.get("/metrics")).text.splitlines():
            if line.startswith("ti_feed_subscribers "):
                return int(float(line.split()[1]))
    return None


class Window:
    """CPU and committed changes over one measured phase."""

    def __init__(self, cpu: CpuMeter, probe: Probe) -> None:
        self.cpu, self.probe = cpu, probe
        self.before, self.revision = cpu.snapshot(), probe.revision()
        self.started = time.monotonic()

    def close(self) -> tuple[Reply, Counter[str]]:
        """The phase's numbers, and the changes committed in it per cluster."""
        seconds = time.monotonic() - self.started
        used = self.cpu.since(self.before)
        revision = self.probe.revision()
        changes = self.probe.changes_by_cluster(self.revision, revision)
        return {
            "seconds": seconds,
            "cores": {name: round(s / seconds, 3) for name, s in used.items()},
            "cpu_s": used,
            "changes": changes.total(),
            "changes_per_s": changes.total() / seconds,
        }, changes


def measure_idle(cpu: CpuMeter, probe: Probe, p: Params) -> Reply:
    window = Window(cpu, probe)
    time.sleep(p.seconds)
    return window.close()[0]


async def measure_dashboards(hub: Hub, cpu: CpuMeter, probe: Probe, p: Params) -> Reply:
    limits = httpx.Limits(max_connections=p.clients + 10, max_keepalive_connections=10)
    timeout = httpx.Timeout(10.0, read=60.0)  # every stream sends at least a ping in 15 s
    async with httpx.AsyncClient(
        base_url=hub.url, http2=False, limits=limits, timeout=timeout, headers=AUTH
    ) as client:
        streams = plan_streams(p, probe.revision())
        started = time.monotonic()
        tasks = [asyncio.create_task(s.read(client)) for s in streams]
        while not all(s.opened or s.ended for s in streams):
            if time.monotonic() - started > OPEN_TIMEOUT_S:
                break
            await asyncio.sleep(0.05)
        open_s = time.monotonic() - started
        await asyncio.sleep(WARMUP_S)
        before = [s.events for s in streams]
        window = Window(cpu, probe)
        await asyncio.sleep(p.seconds / 2)
        gauge = await sse_gauge(client)  # midway: feed subscriptions the hub holds
        await asyncio.sleep(p.seconds / 2)
        result, changes = window.close()
        received: Counter[str] = Counter()
        for s, n in zip(streams, before, strict=True):
            received[s.kind] += s.events - n
        dropped = [{"kind": s.kind, "path": s.path, "why": s.ended} for s in streams if s.ended]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    expected = expected_events(streams, result["seconds"], changes)
    kinds = Counter(s.kind for s in streams)
    result["streams"] = {
        kind: {
            "clients": kinds[kind],
            "events": received[kind],
            "events_per_s": received[kind] / result["seconds"],
            "expected": expected[kind],
            "delivered_ratio": received[kind] / expected[kind] if expected[kind] else None,
        }
        for kind, _ in MIX
    }
    result |= {
        "clients": len(streams),
        "opened": sum(s.opened for s in streams),
        "open_seconds": open_s,
        "dropped": dropped,
        "events_per_s": sum(received.values()) / result["seconds"],
        "hub_feed_subscriptions": gauge,
    }
    return result


# -- report -------------------------------------------------------------------------------


DEFINITIONS = {
    "cores": "CPU seconds (user + system, /proc) per wall second, per process",
    "extra_hub_cores": "hub cores in (B) - hub cores in (A); ratio: (B) / (A)",
    "delivered_ratio": "events received in the window / events the hub should have sent "
    "(changes committed per cluster in the window; a pulse a second per overview)",
    "hub_feed_subscriptions": "ti_feed_subscribers from /metrics midway through (B): the change "
    "feed's subscriptions (cluster views + live feeds + the overview pulse's one)",
}


def delivered(kind: str, s: Reply) -> bool:
    """Enough of the events due: DELIVERED_MIN of them, less one pulse per overview (the
    pulse sleeps a period, then works: a window can hold one fewer)."""
    slack = s["clients"] if kind == "fleet" else 0
    return bool(s["expected"]) and s["events"] >= DELIVERED_MIN * s["expected"] - slack


def evaluate(r: Reply) -> Reply:
    a, b = r["idle"]["cores"]["hub"], r["dashboards"]["cores"]["hub"]
    return {
        "definitions": DEFINITIONS,
        "hub_cores_a": a,
        "hub_cores_b": b,
        "extra_hub_cores": round(b - a, 3),
        "ratio": round(b / a, 2) if a else None,
        "extra_hub_ms_per_client_s": round(1000 * (b - a) / r["dashboards"]["clients"], 3),
        "all_streams_kept": not r["dashboards"]["dropped"]
        and r["dashboards"]["opened"] == r["dashboards"]["clients"],
        "all_events_delivered": all(
            delivered(kind, s) for kind, s in r["dashboards"]["streams"].items()
        ),
    }


def print_table(r: Reply, p: Params) -> None:
    a, b = r["idle"], r["dashboards"]
    print(f"\ndashboards benchmark: {p.clusters} clusters x {p.objects} objects, {p.rate:g}/s")
    streams = f"(B) {b['clients']} streams"
    print(f"  {'':<28}{'(A) no browsers':>18}{streams:>18}")
    for name in ("hub", "agents", "broker", "bench"):
        print(f"  {name + ' cores':<28}{a['cores'][name]:>18.3f}{b['cores'][name]:>18.3f}")
    print(f"  {'changes committed/s':<28}{a['changes_per_s']:>18.1f}{b['changes_per_s']:>18.1f}")
    ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "n/a"
    print(f"  hub: +{r['extra_hub_cores']:.3f} cores in (B), {ratio} of (A)")
    print(f"       {r['extra_hub_ms_per_client_s']:.2f} ms CPU per open dashboard per second")
    print(f"  (B) delivered {b['events_per_s']:,.0f} events/s to clients:")
    for kind, s in b["streams"].items():
        share = f"{s['delivered_ratio']:.3f}" if s["delivered_ratio"] is not None else "n/a"
        print(
            f"    {kind:<8}{s['clients']:>4} streams {s['events_per_s']:>9,.1f} events/s"
            f"   received/expected {share}"
        )
    print(f"  streams opened {b['opened']}/{b['clients']} in {b['open_seconds']:.2f} s,", end="")
    print(f" dropped {len(b['dropped'])}; hub feed subscriptions {b['hub_feed_subscriptions']}")
    print(f"  hub log: {r['hub_log']['warnings_and_errors']} warnings/errors")
    for name in ("all_streams_kept", "all_events_delivered"):
        print(f"  check {name}: {'ok' if r[name] else 'FAILED'}")


def run(p: Params, results: Reply) -> None:
    with tempfile.TemporaryDirectory(prefix="ti-bench-dash-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            run_live(p, results, tmp)
        except BaseException:
            tail = (tmp / "hub.log").read_text(errors="replace").splitlines()[-30:]
            print("hub log, last lines:", *tail, sep="\n  ", file=sys.stderr)
            raise
        finally:
            results["hub_log"] = hub_log_summary(tmp / "hub.log")


def run_live(p: Params, results: Reply, tmp: Path) -> None:
    with (
        Mosquitto(data_dir=tmp / "mosquitto") as broker,
        hub_process(broker.url, f"sqlite:///{tmp}/hub.db", tmp / "hub.log") as hub,
    ):
        assert broker.process is not None
        probe = Probe(tmp / "hub.db")
        fleet = FleetHandle(broker.url, p.clusters, p.objects)
        pids = {"hub": hub.pid, "agents": fleet.process.pid or 0, "broker": broker.process.pid}
        cpu = CpuMeter({**pids, "bench": os.getpid()})
        profiles: Reply = results.setdefault("hub_profile", {}) if p.profile else {}

        def phase(name: str, tag: str) -> AbstractContextManager[None]:
            print(f"{name}...", flush=True)
            if not p.profile:
                return contextlib.nullcontext()
            out = RESULTS.parent / f"dashboards-hub-{tag}.folded"
            return sampled(hub.pid, out, profiles.setdefault(name, {}))

        try:
            print("initial sync...", flush=True)
            sync = results["initial_sync"] = measure_sync(fleet, probe, cpu, p.clusters * p.objects)
            if not sync["complete"]:
                raise RuntimeError(f"initial sync: {sync['rows']} of {sync['expected_rows']} rows")
            with SteadyChanges(fleet, p.rate) as changes:
                time.sleep(WARMUP_S)
                with phase("(A) no browsers", "a"):
                    results["idle"] = measure_idle(cpu, probe, p)
                with phase(f"(B) {p.clients} dashboards", "b"):
                    results["dashboards"] = asyncio.run(measure_dashboards(hub, cpu, probe, p))
            if changes.error is not None:
                raise RuntimeError("the change driver failed") from changes.error
            results["mutations"] = changes.made
        finally:
            fleet.close()
            probe.close()


def main(argv: Sequence[str] | None = None) -> None:
    params = parse_args(argv)
    results: Reply = {"params": asdict(params), "machine": machine_info()}
    try:
        run(params, results)
    except BaseException as exc:
        results["error"] = repr(exc)
        write_results(results, quick_variant(RESULTS, params.quick))
        raise
    results.update(evaluate(results))
    print_table(results, params)
    write_results(results, quick_variant(RESULTS, params.quick))


if __name__ == "__main__":
    main()
