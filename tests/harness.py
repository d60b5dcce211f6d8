"""In-process hub (uvicorn on a free port) and agents, against a real broker and database."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI

from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.broker import free_port
from app.config import HubSettings
from app.hub.hub_pki import HubPki
from app.hub.service import HubService
from app.informer.objects import KindKey
from app.transport import cloudevents, topics
from app.transport.messages import MessageType
from app.transport.mqtt import LinkOptions, MqttLink
from app.transport.topics import DEFAULT_SOURCE
from app.web.app import create_app
from app.web.tls import server_options

KINDS = (KindKey("v1", "ConfigMap"), KindKey("v1", "Pod"))
ADMIN_TOKEN = "test-bootstrap-admin-token-0123456789abcdef"
"""Every live hub of the tests accepts this as its bootstrap (admin) token, and `LiveHub.http`
sends it: tests that are not about access control read and write as an admin."""
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class LiveHub:
    url: str
    hub: HubService
    http: httpx.AsyncClient
    """Sends the bootstrap admin token (`ADMIN_TOKEN`)."""
    app: FastAPI | None = None

    def client(
        self, token: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.AsyncClient:
        """Another client of this hub: with `token` as its bearer token, or none."""
        sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        return httpx.AsyncClient(base_url=self.url, timeout=10, headers=sent)

    async def token(self, name: str, role: str, clusters: str = "", expires: str = "never") -> str:
        """A new API token, made through `POST /tokens` as the admin."""
        body = {"name": name, "role": role, "clusters": clusters, "expires": expires}
        response = await self.http.post("/tokens", json=body)
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

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


class RequestRecorder:
    """ASGI middleware keeping every request's path and body: what went over the wire."""

    def __init__(self, app: Any, requests: list[tuple[str, bytes]]) -> None:
        self.app = app
        self.requests = requests

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = bytearray()
        entry = (scope["path"], body)

        async def recording() -> Any:
            message = await receive()
            body.extend(message.get("body", b""))
            return message

        self.requests.append(entry)  # type: ignore[arg-type]
        await self.app(scope, recording, send)


@asynccontextmanager
async def live_hub(
    record: list[tuple[str, bytes]] | None = None, **settings: Any
) -> AsyncIterator[LiveHub]:
    """A hub serving HTTP on a free port; HTTPS (and mTLS to the broker) when `pki_dir` is
    given, as `transport-informer hub` does. With `record`, every request's path and body is
    appended to it."""
    port = free_port()
    defaults: dict[str, Any] = {
        "maintenance_interval_s": 0.2,
        "replica_id": "hub-test",
        "http_port": port,
        "bootstrap_token": ADMIN_TOKEN,
    }
    hub_settings = HubSettings(**{**defaults, **settings})
    pki = HubPki.from_settings(hub_settings)
    app = create_app(hub_settings)
    if record is not None:
        app.add_middleware(RequestRecorder, requests=record)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
            proxy_headers=False,
            **server_options(pki),
        )
    )
    scheme = "https" if pki else "http"
    verify: ssl.SSLContext | bool = (
        ssl.create_default_context(cafile=str(pki.ca_file)) if pki else True
    )
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        url = f"{scheme}://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10, verify=verify, headers=AUTH) as http:
            yield LiveHub(url, app.state.hub, http, app)
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


class RawAgent:
    """A hand-written agent: publishes whatever it is told on one cluster's topic (as an
    agent built from protocol.md, or an attacker, would), and records what the hub sends."""

    def __init__(self, broker_url: str, cluster: str, source: str = DEFAULT_SOURCE) -> None:
        self.cluster = cluster
        self.topic = topics.agent_events(source, cluster)
        self.received: list[dict[str, Any]] = []
        self.link = MqttLink(
            LinkOptions(
                url=broker_url,
                client_id=f"raw-{cluster}",
                subscriptions=(topics.source_events(source, cluster),),
            ),
            self._on_message,
        )

    async def _on_message(self, topic: str, payload: bytes) -> None:
        self.received.append(orjson.loads(payload))

    async def __aenter__(self) -> RawAgent:
        await self.link.__aenter__()
        await asyncio.wait_for(self.link.wait_connected(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.link.close()

    async def send(self, type_: str, data: dict[str, Any] | bytes) -> None:
        """Publish one message; a dict is wrapped in a CloudEvent and written with the
        standard library's json, which (unlike orjson) nests as deep as a test needs."""
        if isinstance(data, dict):
            envelope = orjson.loads(
                cloudevents.encode(
                    cloudevents.CloudEvent(type_, f"agent/{self.cluster}", self.cluster, {})
                )
            )
            data = json.dumps({**envelope, "data": data}).encode()
        await self.link.publish(self.topic, data)

    async def hello(self, *kinds: str, heartbeat: float = 5.0) -> None:
        await self.send(
            MessageType.HELLO,
            {
                "kinds": [
                    {"apiVersion": k.rpartition("/")[0], "kind": k.rpartition("/")[2]}
                    for k in kinds
                ],
                "heartbeatSeconds": heartbeat,
            },
        )

    async def events(self, *events: tuple[str, dict[str, Any]]) -> None:
        await self.send(
            MessageType.WATCH_EVENTS, {"events": [{"type": t, "object": o} for t, o in events]}
        )

    def resync_requests(self) -> list[list[str]]:
        """The kinds of every resync_request received (empty list: everything)."""
        return [
            [f"{k['apiVersion']}/{k['kind']}" for k in m["data"]["kinds"]]
            for m in self.received
            if m["type"] == MessageType.RESYNC_REQUEST
        ]
