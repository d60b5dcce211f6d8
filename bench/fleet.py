"""The benchmark's agent fleet: N simulated clusters and their agents in one child process.

The parent drives it over a `multiprocessing` pipe with small commands (`start`, `churn`,
`drain`, `stamp`, `stats`, `stop`), each answered with one dict. Running the agents in their
own process keeps their CPU off the hub's interpreter, as in a real deployment.

The clusters are static (`churn_per_s=0`); every change is made on command:
- `churn` calls `mutate` in bursts, as fast as the agents take them, but only on clusters
  whose pending buffer is short, so the agents' per-object conflation does not hide changes;
- `stamp` re-applies objects at a fixed rate with the wall-clock time in the annotation
  `bench/t0` (and a sequence number in `bench/seq`), for the change-to-SSE latency.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from contextlib import AsyncExitStack
from multiprocessing.connection import Connection
from typing import Any

from app.agent.buffer import PublishedIndex
from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.cli import tune_gc
from app.informer.objects import KindKey, WatchEvent

T0_ANNOTATION = "bench/t0"
SEQ_ANNOTATION = "bench/seq"
PENDING_LOW = 100
"""`churn` only mutates a cluster whose agent has fewer pending changes than this."""
STAMP_BURST = 50
"""`stamp` makes at most this many changes before it lets the agents run."""

Reply = dict[str, Any]
ObjectKey = tuple[KindKey, str, str]


def cluster_name(index: int) -> str:
    return f"bench-{index:03d}"


def build_clusters(clusters: int, objects: int, first: int = 0) -> list[SimulatedCluster]:
    """The same clusters (seeded) in every process that asks: the fleet and the raw store.
    `first` is the index of the first: several fleet processes each run their own range."""
    return [
        SimulatedCluster(cluster=cluster_name(i), objects=objects, churn_per_s=0, seed=i)
        for i in range(first, first + clusters)
    ]


class CountingIndex(PublishedIndex):
    """The agent's published index, counting the watch events handed to the transport."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded = 0

    def record(self, event: WatchEvent) -> None:
        self.recorded += 1
        super().record(event)


class Fleet:
    def __init__(self, broker_url: str, clusters: int, objects: int, first: int = 0) -> None:
        self.sims = build_clusters(clusters, objects, first)
        self.agents = [
            Agent(cluster=sim.cluster, source=sim, broker_url=broker_url, labels={"bench": "1"})
            for sim in self.sims
        ]
        self.indexes = [CountingIndex() for _ in self.agents]
        for agent, index in zip(self.agents, self.indexes, strict=True):
            agent.published = index
        self.rng = random.Random(0)
        self._running = AsyncExitStack()

    async def start(self) -> Reply:
        for agent in self.agents:
            await self._running.enter_async_context(agent)
        return {"agents": len(self.agents)}

    async def stop(self) -> Reply:
        # A deliberate close is logged as a lost connection, and gmqtt's reconnect task then
        # sleeps on a closed client; give it time to end instead of being cancelled noisily.
        logging.getLogger("app.transport.mqtt").setLevel(logging.ERROR)
        await self._running.aclose()
        await asyncio.sleep(0.5)
        return {}

    def stats(self) -> Reply:
        return {
            "sent": sum(i.recorded for i in self.indexes),
            "pending": sum(len(a.pending) for a in self.agents),
            "inflight": sum(a.link.inflight for a in self.agents),
            "resource_version": sum(s.resource_version for s in self.sims),
        }

    async def churn(self, total: int, burst: int) -> Reply:
        """Make `total` changes through `mutate`, `burst` at a time per cluster."""
        started = time.monotonic()
        made = 0
        while made < total:
            progressed = False
            for sim, agent in zip(self.sims, self.agents, strict=True):
                if made < total and len(agent.pending) < PENDING_LOW:
                    n = min(burst, total - made)
                    sim.mutate(n)
                    made += n
                    progressed = True
            await asyncio.sleep(0 if progressed else 0.002)
        return {"mutations": made, "seconds": time.monotonic() - started, **self.stats()}

    async def drain(self) -> Reply:
        """Wait until every agent has handed all its changes to the broker (PUBACKed)."""
        busy = True
        while busy:  # the agent has no event for "drained": poll it
            busy = any(len(a.pending) or a.link.inflight for a in self.agents)
            await asyncio.sleep(0.01 if busy else 0)
        return self.stats()

    async def _object_keys(self) -> list[list[ObjectKey]]:
        keys: list[list[ObjectKey]] = []
        for sim in self.sims:
            listings = [await sim.list(kind) for kind in sim.kinds]
            keys.append(
                [
                    (lst.kind, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                    for lst in listings
                    for o in lst.items
                ]
            )
        return keys

    def _stamp_one(self, sim: SimulatedCluster, key: ObjectKey, seq: int) -> None:
        obj = sim.get(*key)
        if obj is None:
            return
        annotations = obj["metadata"].setdefault("annotations", {})
        annotations[SEQ_ANNOTATION] = str(seq)
        annotations[T0_ANNOTATION] = repr(time.time())
        sim.apply(obj)

    async def stamp(self, rate: float, seconds: float) -> Reply:
        """Re-apply `rate` objects a second for `seconds`, round-robin over the clusters.

        At most `STAMP_BURST` at a time, then the agents get the loop: a rate the fleet
        cannot make is then made as fast as the agents also send (stamping all that is
        due at once starved the agents, so the phase measured the stamping instead)."""
        keys = await self._object_keys()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        while (elapsed := loop.time() - started) < seconds:
            due = min(int(elapsed * rate) - sent, STAMP_BURST)
            for _ in range(due):
                i = sent % len(self.sims)
                self._stamp_one(self.sims[i], self.rng.choice(keys[i]), sent)
                sent += 1
            await asyncio.sleep(0 if due == STAMP_BURST else 0.001)
        return {"stamped": sent, "seconds": loop.time() - started}


async def _serve(
    conn: Connection, broker_url: str, clusters: int, objects: int, first: int
) -> None:
    fleet = Fleet(broker_url, clusters, objects, first)
    conn.send({"ready": True})
    while True:
        command, *args = await asyncio.to_thread(conn.recv)
        match command:
            case "start":
                reply = await fleet.start()
            case "stats":
                reply = fleet.stats()
            case "churn":
                reply = await fleet.churn(*args)
            case "drain":
                reply = await fleet.drain()
            case "stamp":
                reply = await fleet.stamp(*args)
            case "stop":
                conn.send(await fleet.stop())
                return
            case _:
                reply = {"error": f"unknown command {command!r}"}
        conn.send(reply)


def run_fleet(
    conn: Connection, broker_url: str, clusters: int, objects: int, first: int = 0
) -> None:
    """The child process' entry point."""
    logging.basicConfig(level=logging.WARNING, format="fleet %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    tune_gc()  # as `transport-informer agent` does
    asyncio.run(_serve(conn, broker_url, clusters, objects, first))
