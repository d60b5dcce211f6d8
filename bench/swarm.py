"""A swarm of light agents in one child process: thousands of clusters, each its own agent.

Every cluster is the real agent (`app.agent.service.Agent` over a `SimulatedCluster` of a
few dozen objects, `churn_per_s=0`), so every cluster has its own MQTT connection, client id
and persistent session, its own hello, snapshots, digests and heartbeats, exactly as in
production. `bench/fleet_scale.py` runs a few of these processes side by side (the agents'
CPU is spread over them, and kept off the hub's interpreter) and drives each over a
`multiprocessing` pipe with small commands, each answered with one dict:

- `grow(first, count)`: start `count` more agents, clusters `first .. first+count-1`; they
  connect all at once (a connect storm), `Agent.__aenter__` does not wait for the broker;
- `stats()`: agents, connected, messages sent, pending changes, this process' RSS;
- `stop()`: say goodbye on every connection (bounded), then leave.

Measured here (4 processes, 30 objects a cluster), the real agent holds up: at 5,000
agents about 0.2 MB of RSS per agent (1.2 GB in all, interpreters included) and 0.08 of a
core per thousand agents at the default heartbeat (5 s) and resync (30 s). So no lean
protocol twin is needed; the hub and the broker give out first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.cli import tune_gc

Reply = dict[str, Any]
STOP_TIMEOUT_S = 30.0


def cluster_name(index: int) -> str:
    return f"swarm-{index:05d}"


def raise_fd_limit() -> int:
    """Lift this process' open-file limit to its hard limit (one socket per agent, or per
    client on the broker); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Swarm:
    def __init__(self, broker_url: str, objects: int, heartbeat_s: float) -> None:
        self.broker_url = broker_url
        self.objects = objects
        self.heartbeat_s = heartbeat_s
        self.agents: list[Agent] = []
        self.object_count = 0

    async def grow(self, first: int, count: int) -> Reply:
        started = time.monotonic()
        for index in range(first, first + count):
            sim = SimulatedCluster(
                cluster=cluster_name(index), objects=self.objects, churn_per_s=0, seed=index
            )
            self.object_count += sim.count()
            agent = Agent(
                cluster=sim.cluster,
                source=sim,
                broker_url=self.broker_url,
                labels={"bench": "swarm", "shard": str(index % 16)},
                heartbeat_s=self.heartbeat_s,
            )
            await agent.__aenter__()
            self.agents.append(agent)
            if index % 100 == 99:
                await asyncio.sleep(0)  # let the connections already started go on
        return {**self.stats(), "grow_s": time.monotonic() - started}

    def stats(self) -> Reply:
        return {
            "agents": len(self.agents),
            "objects": self.object_count,
            "connected": sum(a.link.connected for a in self.agents),
            "sent": sum(a.sent_messages for a in self.agents),
            "pending": sum(len(a.pending) for a in self.agents),
            "rss": rss_bytes(),
        }

    async def stop(self) -> Reply:
        logging.getLogger("app.transport.mqtt").setLevel(logging.CRITICAL)
        logging.getLogger("app.agent.service").setLevel(logging.CRITICAL)

        async def close(agent: Agent) -> None:
            with contextlib.suppress(Exception):  # a teardown: the process ends next
                await agent.__aexit__(None, None, None)

        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await asyncio.gather(*(close(a) for a in self.agents))
        except TimeoutError:
            return {"stopped": False}
        return {"stopped": True}


async def _serve(conn: Connection, broker_url: str, objects: int, heartbeat_s: float) -> None:
    swarm = Swarm(broker_url, objects, heartbeat_s)
    conn.send({"ready": True, "fd_limit": raise_fd_limit()})
    while True:
        command, *args = await asyncio.to_thread(conn.recv)
        match command:
            case "grow":
                reply = await swarm.grow(*args)
            case "stats":
                reply = swarm.stats()
            case "stop":
                conn.send(await swarm.stop())
                return
            case _:
                reply = {"error": f"unknown command {command!r}"}
        conn.send(reply)


def run_swarm(conn: Connection, broker_url: str, objects: int, heartbeat_s: float) -> None:
    """The child process' entry point."""
    logging.basicConfig(level=logging.WARNING, format="swarm %(levelname)s %(name)s: %(message)s")
    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    # a connect storm overflows the broker's listen backlog: agents retry, as they should
    logging.getLogger("app.transport.mqtt").setLevel(logging.ERROR)
    # gmqtt's callbacks on a connection the broker dropped raise inside asyncio (thousands
    # of tracebacks when the broker sheds clients); the agents reconnect regardless
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    tune_gc()  # as `transport-informer agent` does
    asyncio.run(_serve(conn, broker_url, objects, heartbeat_s))
