"""`make bench` (flood): one cluster floods the hub; how long do another cluster's changes take?

Processes: a private Mosquitto, the hub as in production (`python -m app hub`, SQLite in a
temp dir), a flooder process publishing `--messages` QoS 1 messages for cluster `flood` as
fast as the broker takes them, and this process, which is the victim: cluster `victim`
publishes `--victim-rate` changes a second, each stamped with its wall-clock time, and reads
them back from `GET /stream?cluster=victim`; latency = SSE receive time - stamp.

Cases, each on a fresh hub:
  baseline       no flood
  valid          the flood is valid watch events (one small ConfigMap change each)
  junk           the flood is not JSON
  valid-noquota  the valid flood with the per-cluster quota switched off: what the quota buys

Writes bench/results/flood.json and prints a table. The goal (issue 7): the victim's p99
stays below 500 ms during a 50,000-message flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.broker import Mosquitto, free_port
from app.transport import cloudevents, topics
from app.transport.messages import MessageType
from app.transport.mqtt import LinkOptions, MqttLink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import AUTH, HUB_ENV, quick_variant

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "flood.json"
STAMP = "bench/t0"
GOAL_P99_MS = 500.0


def config_map(name: str, rv: int, stamp: float | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "resourceVersion": str(rv),
        "labels": {"app": "bench"},
    }
    if stamp is not None:
        meta["annotations"] = {STAMP: repr(stamp)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"k": "v" * 200}}


def message(cluster: str, type_: str, data: dict[str, Any]) -> bytes:
    return cloudevents.encode(cloudevents.CloudEvent(type_, f"agent/{cluster}", cluster, data))


def hello(cluster: str) -> bytes:
    kinds = [{"apiVersion": "v1", "kind": "ConfigMap"}]
    return message(cluster, MessageType.HELLO, {"kinds": kinds, "heartbeatSeconds": 5.0})


def events(cluster: str, *objects: dict[str, Any]) -> bytes:
    data = {"events": [{"type": "MODIFIED", "object": o} for o in objects]}
    return message(cluster, MessageType.WATCH_EVENTS, data)


async def _flood(url: str, count: int, junk: bool, started: Any, done: Any) -> None:
    link = MqttLink(LinkOptions(url=url, client_id="bench-flooder", max_inflight=200))
    topic = topics.agent_events(topics.DEFAULT_SOURCE, "flood")
    async with link:
        await link.wait_connected()
        await link.publish(topic, hello("flood"))
        await link.flush()
        started.set()
        t0 = time.monotonic()
        for i in range(count):
            payload = b"not json %d" % i if junk else events("flood", config_map("hot", 10 + i))
            await link.publish(topic, payload)
        await link.flush()
        done.put(count / (time.monotonic() - t0))


def flooder(url: str, count: int, junk: bool, started: Any, done: Any) -> None:
    asyncio.run(_flood(url, count, junk, started, done))


@dataclass
class CaseResult:
    case: str
    flood_messages: int
    flood_rate_msg_s: float
    victim_changes: int
    victim_p50_ms: float
    victim_p99_ms: float
    victim_max_ms: float
    dropped_over_quota: int
    refused_not_json: int
    hub_cpu_s: float


class Hub:
    def __init__(self, broker: Mosquitto, tmp: Path, quota: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "TI_LOG_LEVEL": "WARNING", **HUB_ENV}
        if not quota:
            off = {"TI_QUOTA_MESSAGES_PER_S", "TI_QUOTA_MESSAGE_BURST"}
            off |= {"TI_QUOTA_BYTES_PER_S", "TI_QUOTA_BYTE_BURST"}
            env.update(dict.fromkeys(off, "1e12"))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "hub",
                "--broker",
                broker.url,
                "--database-url",
                f"sqlite:///{tmp}/hub.db",
                "--port",
                str(self.port),
                "--replica-id",
                "bench-flood",
            ],
            env=env,
            cwd=ROOT,
        )

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def wait_ready(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=AUTH) as http:
            for _ in range(300):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("hub did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _victim(
    broker: Mosquitto, hub: Hub, rate: float, flood_over: Any, tail_s: float
) -> list[float]:
    """Publish stamped changes at `rate` from the flood's start until `tail_s` after the
    flooder finished, then wait until every one of them has been streamed back (however
    late); return their change-to-SSE latencies in ms."""
    link = MqttLink(LinkOptions(url=broker.url, client_id="bench-victim"))
    topic = topics.agent_events(topics.DEFAULT_SOURCE, "victim")
    latencies: list[float] = []
    async with link, httpx.AsyncClient(base_url=hub.url, timeout=None, headers=AUTH) as http:
        await link.wait_connected()
        await link.publish(topic, hello("victim"))
        for _ in range(100):
            if (await http.get("/clusters/victim")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        async with http.stream("GET", "/stream", params={"cluster": "victim"}) as response:
            reader = asyncio.ensure_future(_read(response, latencies))
            sent = 0
            deadline: float | None = None
            while deadline is None or time.monotonic() < deadline:
                sent += 1
                await link.publish(topic, events("victim", config_map("v", sent, time.time())))
                await asyncio.sleep(1 / rate)
                if deadline is None and flood_over():
                    deadline = time.monotonic() + tail_s
            waited = time.monotonic()
            while len(latencies) < sent and time.monotonic() - waited < 120:
                if reader.done():
                    raise RuntimeError(f"the victim's stream ended: {reader!r}")
                await asyncio.sleep(0.1)
            reader.cancel()
        if len(latencies) < sent:
            stored = (await http.get("/clusters/victim/resources")).json()["items"]
            raise RuntimeError(
                f"only {len(latencies)} of {sent} victim changes were streamed in "
                f"{time.monotonic() - waited:.0f}s; stored: "
                f"{[o['metadata']['resourceVersion'] for o in stored]}"
            )
    return latencies


async def _read(response: httpx.Response, latencies: list[float]) -> None:
    async for line in response.aiter_lines():
        if line.startswith("data:") and STAMP in line:
            obj = orjson.loads(line[5:])["object"]
            stamp = float(obj["metadata"]["annotations"][STAMP])
            latencies.append((time.time() - stamp) * 1000)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(case: str, messages: int, victim_rate: float) -> CaseResult:
    junk, quota = case == "junk", case != "valid-noquota"
    with tempfile.TemporaryDirectory(prefix="ti-flood-") as tmp, Mosquitto() as broker:
        hub = Hub(broker, Path(tmp), quota)
        try:
            await hub.wait_ready()
            cpu0 = hub.cpu_s()
            ctx = multiprocessing.get_context("spawn")
            started, done = ctx.Event(), ctx.Queue()
            proc = None
            if case != "baseline":
                proc = ctx.Process(target=flooder, args=(broker.url, messages, junk, started, done))
                proc.start()
                started.wait(30)
            flood_rate = 0.0

            def flood_over() -> bool:
                nonlocal flood_rate
                if proc is None:
                    return True
                if done.empty():
                    return False
                flood_rate = done.get()
                return True

            latencies = await _victim(broker, hub, victim_rate, flood_over, tail_s=5.0)
            if proc is not None:
                proc.join(30)
            async with httpx.AsyncClient(base_url=hub.url, headers=AUTH) as http:
                counts = (await http.get("/rejections")).json()["counts"]
            return CaseResult(
                case=case,
                flood_messages=0 if proc is None else messages,
                flood_rate_msg_s=round(flood_rate),
                victim_changes=len(latencies),
                victim_p50_ms=round(statistics.median(latencies), 1),
                victim_p99_ms=round(_pct(latencies, 0.99), 1),
                victim_max_ms=round(max(latencies), 1),
                dropped_over_quota=counts.get("over_quota", 0),
                refused_not_json=counts.get("not_json", 0),
                hub_cpu_s=round(hub.cpu_s() - cpu0, 2),
            )
        finally:
            hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--victim-rate", type=float, default=50.0)
    parser.add_argument("--quick", action="store_true", help="10,000 messages")
    args = parser.parse_args()
    messages = 10_000 if args.quick else args.messages
    results = []
    for case in ("baseline", "valid", "junk", "valid-noquota"):
        result = asyncio.run(run_case(case, messages, args.victim_rate))
        print(
            f"{case:14} flood {result.flood_messages:>6} msgs @ {result.flood_rate_msg_s:>6}/s  "
            f"victim p50 {result.victim_p50_ms:>7} ms  p99 {result.victim_p99_ms:>7} ms  "
            f"max {result.victim_max_ms:>7} ms  dropped {result.dropped_over_quota:>6}  "
            f"hub cpu {result.hub_cpu_s} s",
            flush=True,
        )
        results.append(result)
    flooded = [r for r in results if r.case in ("valid", "junk")]
    met = all(r.victim_p99_ms < GOAL_P99_MS for r in flooded)
    doc = {
        "benchmark": "flood",
        "goal": f"victim change-to-SSE p99 < {GOAL_P99_MS:g} ms during the flood (quota on)",
        "met": met,
        "params": {"messages": messages, "victim_rate": args.victim_rate},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d"),
        },
        "results": [asdict(r) for r in results],
    }
    out = quick_variant(RESULTS, args.quick)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"goal {'met' if met else 'NOT met'}: {doc['goal']}; wrote {out}")


if __name__ == "__main__":
    main()
