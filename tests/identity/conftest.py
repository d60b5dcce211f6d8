"""Real certificates (a CA made per test), mosquitto running the shipped secure
configuration, and bare MQTT peers that hold one certificate each."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gmqtt import Client

from app.broker import Mosquitto
from app.pki.authority import Authority, cert_pem, key_pem, new_key, utcnow
from app.pki.layout import PkiDir, init_pki, write_atomic
from app.transport.mqtt import parse_broker_url
from app.transport.tls import client_context
from tests.harness import LiveHub, live_hub

SOURCE = "transport-informer"
HUB = f"hub.{SOURCE}"


def agent_events(cluster: str) -> str:
    return f"sources/{SOURCE}/consumers/{cluster}/agentevents"


def source_events(cluster: str) -> str:
    return f"sources/{SOURCE}/consumers/{cluster}/sourceevents"


@dataclass
class Pki:
    dir: PkiDir
    authority: Authority
    scratch: Path

    def identity(
        self,
        name: str,
        *,
        lifetime: dt.timedelta = dt.timedelta(days=1),
        issued: dt.datetime | None = None,
        authority: Authority | None = None,
    ) -> Path:
        """A key and certificate (CN=`name`) in one PEM file."""
        key = new_key()
        cert = (authority or self.authority).issue(
            key.public_key(), name, lifetime=lifetime, now=issued
        )
        path = self.scratch / f"{name}-{cert.serial_number:x}.pem"
        write_atomic(path, key_pem(key) + cert_pem(cert), 0o600)
        return path

    def context(self, name: str, **kwargs: Any) -> ssl.SSLContext:
        return client_context(self.dir.ca_cert, self.identity(name, **kwargs))

    def hub_context(self) -> ssl.SSLContext:
        return client_context(self.dir.ca_cert, self.dir.hub_cert, self.dir.hub_key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki_dir = init_pki(tmp_path / "pki", source=SOURCE)
    scratch = tmp_path / "identities"
    scratch.mkdir()
    return Pki(pki_dir, Authority.load(pki_dir.ca_cert, pki_dir.ca_key), scratch)


@pytest.fixture
def secure_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """deploy/mosquitto.conf and deploy/mosquitto-acl, on a free port."""
    with Mosquitto(data_dir=tmp_path / "mosquitto", pki_dir=pki.dir.root) as server:
        yield server


@pytest.fixture
def aclless_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """The shipped configuration with its ACL switched off: any certificate of the CA may
    publish and read anything."""
    with Mosquitto(data_dir=tmp_path / "mosquitto", pki_dir=pki.dir.root, acl_file=None) as server:
        yield server


def expired_issue() -> dt.datetime:
    return utcnow() - dt.timedelta(days=3)


@dataclass
class Peer:
    """One MQTT connection with one certificate, which never reconnects: what it receives,
    the granted QoS of its subscriptions, and whether the broker closed it."""

    client: Any
    received: list[tuple[str, bytes]] = field(default_factory=list)
    granted: list[int] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    news: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a message or a SUBACK arrives."""

    def topics(self) -> list[str]:
        return [t for t, _ in self.received]

    async def wait_for(self, topic: str, payload: bytes, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while (topic, payload) not in self.received:
                self.news.clear()
                await self.news.wait()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)


@asynccontextmanager
async def peer(
    broker: Mosquitto, context: ssl.SSLContext, client_id: str, *subscriptions: str
) -> AsyncIterator[Peer]:
    """Connected (and subscribed, SUBACKs received) on entry; disconnected on exit."""
    client = Client(client_id, clean_session=True)
    client.set_config({"reconnect_retries": 0})
    found = Peer(client)

    def on_message(_c: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        found.received.append((topic, payload))
        found.news.set()
        return 0

    def on_subscribe(_c: Any, _mid: int, qos: tuple[int, ...], _props: Any) -> None:
        found.granted.extend(qos)
        found.news.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_disconnect = lambda *_args, **_kw: found.disconnected.set()
    host, port, _tls = parse_broker_url(broker.url)
    await asyncio.wait_for(client.connect(host, port, ssl=context, keepalive=30), 10)
    for topic in subscriptions:
        client.subscribe(topic, qos=1)
    async with asyncio.timeout(5):
        while len(found.granted) < len(subscriptions):
            found.news.clear()
            await found.news.wait()
    try:
        yield found
    finally:
        client.stop_reconnect()
        if not found.disconnected.is_set():
            with contextlib.suppress(ssl.SSLError):  # the broker may write after close_notify
                await asyncio.wait_for(client.disconnect(), 5)


@asynccontextmanager
async def pki_hub(
    broker: Mosquitto,
    pki: Pki,
    database_url: str,
    record: list[tuple[str, bytes]] | None = None,
    **settings: Any,
) -> AsyncIterator[LiveHub]:
    """A live hub with the PKI: mTLS to `broker`, HTTPS, registrations enforced."""
    async with live_hub(
        record,
        broker_url=broker.url,
        database_url=database_url,
        pki_dir=str(pki.dir.root),
        broker_pid_file=str(broker.pid_file),
        **{"registry_refresh_s": 0.2, **settings},
    ) as hub:
        yield hub


async def register(hub: LiveHub, name: str, **body: Any) -> dict[str, Any]:
    """POST /clusters: the admin's registration; its answer (token, command)."""
    response = await hub.http.post("/clusters", json={"name": name, **body})
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer
