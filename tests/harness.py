"""In-process hub (uvicorn on a free port) and agents, against a real broker and database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.broker import free_port
from app.config import HubSettings
from app.hub.service import HubService
from app.informer.objects import KindKey
from app.web.app import create_app

KINDS = (KindKey("v1", "ConfigMap"), KindKey("v1", "Pod"))


@dataclass
class LiveHub:
    url: str
    hub: HubService
    http: httpx.AsyncClient

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    async def names(self, cluster: str, **params: Any) -> dict[tuple[str, str], str]:
        """(kind, name) -> resourceVersion of every live object of a cluster."""
        out: dict[tuple[str, str], str] = {}
        token = None
        while True:
            query = {**params, "limit": 1000, **({"continue": token} if token else {})}
            response = await self.http.get(f"/clusters/{cluster}/resources", params=query)
            if response.status_code == 404:
                return {}
            response.raise_for_status()
            page = response.json()
            for item in page["items"]:
                meta = item["metadata"]
                out[(item["kind"], f"{meta.get('namespace', '')}/{meta['name']}")] = meta[
                    "resourceVersion"
                ]
            token = page["continue"]
            if not token:
                return out


async def sim_names(sim: SimulatedCluster) -> dict[tuple[str, str], str]:
    out = {}
    for kind in sim.kinds:
        for obj in (await sim.list(kind)).items:
            meta = obj["metadata"]
            out[(obj["kind"], f"{meta.get('namespace', '')}/{meta['name']}")] = meta[
                "resourceVersion"
            ]
    return out


@asynccontextmanager
async def live_hub(**settings: Any) -> AsyncIterator[LiveHub]:
    port = free_port()
    defaults: dict[str, Any] = {
        "maintenance_interval_s": 0.2,
        "replica_id": "hub-test",
        "http_port": port,
    }
    app = create_app(HubSettings(**{**defaults, **settings}))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            yield LiveHub(f"http://127.0.0.1:{port}", app.state.hub, http)
    finally:
        server.should_exit = True
        await task


def sim_agent(
    cluster: str,
    broker_url: str,
    *,
    objects: int = 40,
    labels: dict[str, str] | None = None,
    kinds: tuple[KindKey, ...] = KINDS,
    **kwargs: Any,
) -> tuple[Agent, SimulatedCluster]:
    sim = SimulatedCluster(
        cluster=cluster, objects=objects, churn_per_s=0, seed=hash(cluster) % 1000, kinds=kinds
    )
    options: dict[str, Any] = {"heartbeat_s": 0.5, "resync_s": 1.0, **kwargs}
    agent = Agent(
        cluster=cluster,
        source=sim,
        broker_url=broker_url,
        labels=labels or {"env": "test"},
        **options,
    )
    return agent, sim


async def in_sync(hub: LiveHub, cluster: str, sim: SimulatedCluster) -> bool:
    return await hub.names(cluster) == await sim_names(sim)


@asynccontextmanager
async def synced_cluster(
    broker_url: str,
    database_url: str,
    cluster: str,
    *,
    hub: dict[str, Any] | None = None,
    **agent: Any,
) -> AsyncIterator[tuple[LiveHub, Agent, SimulatedCluster]]:
    """A live hub and one sim agent, yielded once the hub holds exactly the sim's objects."""
    from tests.conftest import wait_until

    async with live_hub(broker_url=broker_url, database_url=database_url, **(hub or {})) as live:
        the_agent, sim = sim_agent(cluster, broker_url, **agent)
        async with the_agent:
            await wait_until(lambda: in_sync(live, cluster, sim), what=f"{cluster} synced")
            yield live, the_agent, sim


class SseReader:
    """Reads events (skipping pings and comments) from one streaming SSE response."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, count: int) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        current: dict[str, str] = {}
        async for line in self._lines:
            if not line:
                if current.get("event"):
                    events.append(current)
                    if len(events) == count:
                        return events
                current = {}
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            # several data lines make one value, joined by newlines (the SSE rules)
            current[field] = f"{current[field]}\n{value}" if field in current else value
        return events
