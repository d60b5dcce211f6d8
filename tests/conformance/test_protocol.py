"""Conformance: docs/protocol.md, spoken from raw MQTT and JSON only.

This module imports nothing from `app/`: it is an agent written from the document. It runs
a hub as its own process (`python -m app hub`) against the test broker and checks every
message type and every rejection reason the document names, by what the hub stores
(REST), streams, counts (`GET /rejections`) and sends back on the agent's `sourceevents`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from gmqtt import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "transport-informer"
PREFIX = "io.transport-informer.v1"
T = {
    "hello": f"{PREFIX}.clusters.status.hello",
    "heartbeat": f"{PREFIX}.clusters.status.heartbeat",
    "offline": f"{PREFIX}.clusters.status.offline",
    "events": f"{PREFIX}.resources.status.update_request",
    "snapshot": f"{PREFIX}.resources.status.resync_response",
    "digest": f"{PREFIX}.resources.status.digest",
    "resync": f"{PREFIX}.resources.status.resync_request",
    "apply": f"{PREFIX}.workloads.spec.update_request",
    "remove": f"{PREFIX}.workloads.spec.delete_request",
    "status": f"{PREFIX}.workloads.status.update_request",
    "spec_resync": f"{PREFIX}.workloads.spec.resync_request",
    "status_resync": f"{PREFIX}.workloads.status.resync_request",
}
QUOTA = 300
"""Messages per second (and burst) the hub under test takes from one cluster."""
TOKEN = "conformance-" + "0123456789abcdef" * 3
"""The hub's bootstrap admin token (`TI_BOOTSTRAP_TOKEN`): the HTTP side needs one."""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def envelope(type_: str, cluster: str, data: Any) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": f"agent/{cluster}",
            "type": type_,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json",
            "clustername": cluster,
            "data": data,
        }
    ).encode()


def pod(name: str, rv: int, uid: str | None = None, **extra: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "web", "uid": uid or f"uid-{name}"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**meta, "resourceVersion": str(rv), "labels": {"app": "web"}},
        **extra,
    }


def digest(pairs: list[tuple[str, int]]) -> str:
    """Section 6: the first 32 hex characters of SHA-256 over sorted "<uid>:<rv>\\n" lines."""
    lines = sorted(f"{uid}:{rv}" for uid, rv in pairs)
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()[:32]


class Agent:
    """One cluster's connection: publishes on its agentevents, records its sourceevents."""

    def __init__(self, broker_port: int, cluster: str) -> None:
        self.cluster = cluster
        self.port = broker_port
        self.topic = f"sources/{SOURCE}/consumers/{cluster}/agentevents"
        self.received: list[dict[str, Any]] = []
        self.client = Client(f"conformance-{cluster}-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message

    def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
        self.received.append(json.loads(payload))
        return 0

    async def __aenter__(self) -> Agent:
        await self.client.connect("127.0.0.1", self.port)
        self.client.subscribe(f"sources/{SOURCE}/consumers/{self.cluster}/sourceevents", qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.disconnect()

    async def send(self, type_: str, data: Any, *, topic: str | None = None) -> None:
        self.raw(envelope(type_, self.cluster, data), topic=topic)
        await asyncio.sleep(0.01)

    def raw(self, payload: bytes, *, topic: str | None = None) -> None:
        self.client.publish(topic or self.topic, payload, qos=1)

    async def hello(self, *kinds: tuple[str, str], heartbeat: float = 5.0, **extra: Any) -> None:
        data = {
            "protocol": 1,
            "labels": {"env": "conformance"},
            "kinds": [{"apiVersion": a, "kind": k} for a, k in kinds],
            "heartbeatSeconds": heartbeat,
            "agentVersion": "conformance",
            "instance": uuid.uuid4().hex,
            **extra,
        }
        await self.send(T["hello"], data)

    def of_type(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == T[name]]


class Hub:
    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
        )

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    async def status(self, path: str) -> int:
        return (await self.http.get(path)).status_code

    async def names(self, cluster: str) -> dict[str, str]:
        response = await self.http.get(f"/clusters/{cluster}/resources", params={"limit": 1000})
        if response.status_code != 200:
            return {}
        return {
            i["metadata"]["name"]: i["metadata"]["resourceVersion"]
            for i in response.json()["items"]
        }

    async def refused(self, cluster: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.get("/rejections", cluster=cluster))["items"]
        return items


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
def hub_process(broker: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    db = tmp_path / "hub.db"
    env = {
        **os.environ,
        "TI_LOG_LEVEL": "WARNING",
        "TI_QUOTA_MESSAGES_PER_S": str(QUOTA),
        "TI_QUOTA_MESSAGE_BURST": str(QUOTA),
        "TI_QUOTA_CALM_S": "1",
        "TI_MAINTENANCE_INTERVAL_S": "0.5",
        "TI_BOOTSTRAP_TOKEN": TOKEN,
    }
    args = ["--broker", broker.url, "--database-url", f"sqlite:///{db}", "--port", str(port)]
    with open(tmp_path / "hub.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "hub", *args, "--replica-id", "conformance"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        yield f"http://127.0.0.1:{port}", db
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def hub(hub_process: tuple[str, Path]) -> AsyncIterator[Hub]:
    client = Hub(hub_process[0])

    async def up() -> bool:
        try:
            return await client.status("/readyz") == 200
        except httpx.TransportError:
            return False

    await eventually(up, "the hub to be ready", within=30)
    yield client
    await client.http.aclose()


@pytest.fixture
def broker_port(broker: Any) -> int:
    return int(broker.port)


POD = ("v1", "Pod")
CONFIG_MAP = ("v1", "ConfigMap")


async def test_lifecycle_watch_events_snapshots_and_digests(hub: Hub, broker_port: int) -> None:
    async with Agent(broker_port, "conf-1") as agent:
        await agent.hello(POD, heartbeat=2.0)
        await eventually(lambda: _is(hub.status("/clusters/conf-1"), 200), "hello (3.1)")
        cluster = await hub.get("/clusters/conf-1")
        assert cluster["online"] and cluster["labels"] == {"env": "conformance"}
        await agent.send(T["heartbeat"], {})  # 3.2
        # 3.5: one listing in two chunks; the sweep deletes what it lacks
        await agent.send(T["events"], {"events": [{"type": "ADDED", "object": pod("old", 1)}]})
        head = {"snapshotId": "s1", "apiVersion": "v1", "kind": "Pod", "resourceVersion": "10"}
        chunk0 = {**head, "chunk": 0, "last": False, "items": [pod("a", 5)], "replace": True}
        await agent.send(T["snapshot"], chunk0)
        await agent.send(T["snapshot"], chunk0)  # a redelivered chunk is not a gap (6)
        await agent.send(T["snapshot"], {**head, "chunk": 1, "last": True, "items": [pod("b", 6)]})
        await eventually(lambda: _eq(hub.names("conf-1"), {"a": "5", "b": "6"}), "the sweep")
        # 3.4: watch events, a stale one ignored, a delete
        events = [
            {"type": "MODIFIED", "object": pod("a", 11)},
            {"type": "MODIFIED", "object": pod("a", 7)},
            {"type": "DELETED", "object": pod("b", 12)},
            {"type": "ADDED", "object": pod("c", 13)},
        ]
        await agent.send(T["events"], {"events": events})
        await eventually(lambda: _eq(hub.names("conf-1"), {"a": "11", "c": "13"}), "events")
        # 3.6 / 6: a digest that matches asks nothing; one that differs asks for a relist
        good = digest([("uid-a", 11), ("uid-c", 13)])
        await agent.send(
            T["digest"],
            {"digests": [{"apiVersion": "v1", "kind": "Pod", "count": 2, "hash": good}]},
        )
        await asyncio.sleep(1.0)
        assert agent.of_type("resync") == []
        bad = {"apiVersion": "v1", "kind": "Pod", "count": 2, "hash": "0" * 32}
        await agent.send(T["digest"], {"digests": [bad]})
        await eventually(lambda: _true(bool(agent.of_type("resync"))), "resync_request (3.7)")
        (request,) = agent.of_type("resync")
        assert request["data"] == {"kinds": [{"apiVersion": "v1", "kind": "Pod"}]}
        assert request["clustername"] == "conf-1" and request["specversion"] == "1.0"
        # 3.3: offline
        await agent.send(T["offline"], {"reason": "conformance done"})
        await eventually(lambda: _offline(hub, "conf-1"), "offline (3.3)")


async def test_the_digest_example_of_the_document_is_reproducible() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    pod_uid = "0b6f3a52-8c1e-4d55-9a57-2f1c6f0e9d11"
    assert f'"hash": "{digest([(pod_uid, 1042)])}"' in doc
    assert f'"hash": "{digest([])}"' in doc


async def test_every_rejection_reason_is_counted_recorded_and_acknowledged(
    hub: Hub, broker_port: int, hub_process: tuple[str, Path]
) -> None:
    async with Agent(broker_port, "conf-2") as agent:
        await agent.hello(POD)
        await eventually(lambda: _is(hub.status("/clusters/conf-2"), 200), "hello")
        big = b'{"specversion":"1.0","pad":"' + b"x" * (512 * 1024) + b'"}'
        agent.raw(big)  # oversized
        agent.raw(b"not json")  # not_json
        agent.raw(b"[1, 2]")  # not_json: not an object
        agent.raw(envelope(T["hello"], "someone-else", {"kinds": [], "heartbeatSeconds": 5}))
        await agent.send("io.transport-informer.v9.clusters.status.hello", {})  # unknown_type
        await agent.send(T["hello"], {"protocol": 2, "kinds": [], "heartbeatSeconds": 5})
        await agent.send(T["hello"], {"kinds": [], "heartbeatSeconds": 0})  # malformed
        await agent.send(T["events"], {"events": "nope"})  # malformed
        bad_objects = [
            {"type": "ADDED", "object": {"kind": "Pod", "metadata": {}}},  # bad_object
            {"type": "BOGUS", "object": pod("x", 1)},  # bad_event_type
            {"type": "ADDED", "object": {**pod("cm", 2), "kind": "ConfigMap"}},  # unannounced
            {"type": "ADDED", "object": pod("fine", 3)},
        ]
        await agent.send(T["events"], {"events": bad_objects})
        stray = {
            **pod("s", 4),
            "kind": "Node",
            "metadata": {"name": "s", "uid": "u", "resourceVersion": "4"},
        }
        snapshot = {
            "snapshotId": "s9",
            "apiVersion": "v1",
            "kind": "Pod",
            "resourceVersion": "9",
            "chunk": 0,
            "last": True,
            "items": [pod("fine", 3), stray],  # wrong_kind
        }
        await agent.send(T["snapshot"], snapshot)
        agent.raw(b"{}", topic=f"sources/{SOURCE}/consumers/Not_Valid/agentevents")  # topic
        expected = {
            "oversized",
            "not_json",
            "cluster_mismatch",
            "unknown_type",
            "protocol",
            "malformed",
            "bad_object",
            "bad_event_type",
            "unannounced_kind",
            "wrong_kind",
        }

        async def all_seen() -> bool:
            reasons = {r["reason"] for r in await hub.refused("conf-2")}
            return expected <= reasons

        await eventually(all_seen, "every reason recorded")
        assert await hub.names("conf-2") == {"fine": "3"}  # the valid objects were applied
        counts = (await hub.get("/rejections"))["counts"]
        assert counts["not_json"] == 2 and counts["malformed"] == 2
        topic_rows = await hub.refused("Not_Valid")
        assert [r["reason"] for r in topic_rows] == ["topic"]
    # no_hello: inventory from a cluster that never said hello; the hub asks for hello
    async with Agent(broker_port, "conf-3") as early:
        await early.send(T["events"], {"events": [{"type": "ADDED", "object": pod("e", 1)}]})
        await eventually(lambda: _true(bool(early.of_type("resync"))), "a request for hello")
        assert early.of_type("resync")[0]["data"] == {"kinds": []}
        assert [r["reason"] for r in await hub.refused("conf-3")] == ["no_hello"]
    # unstorable: the database refuses one object (a trigger stands in for any data error)
    _, db = hub_process
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON resources WHEN NEW.name = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    async with Agent(broker_port, "conf-4") as agent:
        await agent.hello(POD)
        await eventually(lambda: _is(hub.status("/clusters/conf-4"), 200), "hello")
        events = [{"type": "ADDED", "object": pod(n, i + 1)} for i, n in enumerate("ab")]
        events.insert(1, {"type": "ADDED", "object": pod("poison", 9)})
        await agent.send(T["events"], {"events": events})
        await eventually(lambda: _eq(hub.names("conf-4"), {"a": "1", "b": "2"}), "the rest")
        await eventually(lambda: _reasons(hub, "conf-4", ["unstorable"]), "unstorable recorded")
    # over_quota: more than QUOTA messages a second are dropped; once calm, a full relist
    async with Agent(broker_port, "conf-5") as agent:
        await agent.hello(POD)
        await eventually(lambda: _is(hub.status("/clusters/conf-5"), 200), "hello")
        for i in range(QUOTA * 4):
            agent.raw(envelope(T["heartbeat"], "conf-5", {}))
            if i % 100 == 0:
                await asyncio.sleep(0)
        await eventually(lambda: _reasons(hub, "conf-5", ["over_quota"]), "over_quota recorded")
        await eventually(
            lambda: _true({"kinds": []} in [m["data"] for m in agent.of_type("resync")]),
            "a full relist once calm",
        )


async def test_workload_messages_both_ways(hub: Hub, broker_port: int) -> None:
    async with Agent(broker_port, "conf-6") as agent:
        await agent.hello(POD)
        await eventually(lambda: _is(hub.status("/clusters/conf-6"), 200), "hello")
        manifest = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "web"},
        }
        spec = {"name": "conf", "manifests": [manifest], "placement": {"clusters": ["conf-6"]}}
        created = await hub.http.post("/workloads", json=spec)
        assert created.status_code == 201, created.text
        await eventually(lambda: _true(bool(agent.of_type("apply"))), "update_request (3.8)")
        apply = agent.of_type("apply")[0]["data"]
        assert apply["workload"] == "conf" and apply["manifests"] == [manifest]
        status = {
            "workload": "conf",
            "version": apply["version"],
            "removed": False,
            "conditions": [
                {"type": "Applied", "status": "True", "reason": "Applied", "message": ""},
                {"type": "Available", "status": "True", "reason": "ObjectsReady", "message": ""},
            ],
            "feedback": {},
            "error": "",
            "statusHash": "h1",
        }
        await agent.send(T["status"], status)
        await eventually(lambda: _state(hub, "conf", "Available"), "the ack recorded")
        await agent.send(
            T["spec_resync"], {"workloads": [{"workload": "conf", "version": apply["version"]}]}
        )
        await eventually(lambda: _true(bool(agent.of_type("status_resync"))), "status resync")
        hashes = agent.of_type("status_resync")[-1]["data"]["statusHashes"]
        assert hashes == [{"workload": "conf", "statusHash": "h1"}]
        assert (await hub.http.delete("/workloads/conf")).status_code == 202
        await eventually(lambda: _true(bool(agent.of_type("remove"))), "delete_request")
        removal = agent.of_type("remove")[0]["data"]
        await agent.send(
            T["status"],
            {**status, "version": removal["version"], "removed": True, "conditions": []},
        )
        await eventually(lambda: _is(hub.status("/workloads/conf"), 404), "the workload forgotten")


async def _is(value: Awaitable[int], expected: int) -> bool:
    try:
        return await value == expected
    except httpx.TransportError:
        return False


async def _eq(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value


async def _offline(hub: Hub, cluster: str) -> bool:
    return not (await hub.get(f"/clusters/{cluster}"))["online"]


async def _reasons(hub: Hub, cluster: str, reasons: list[str]) -> bool:
    return [r["reason"] for r in await hub.refused(cluster)] == reasons


async def _state(hub: Hub, workload: str, state: str) -> bool:
    clusters = (await hub.get(f"/workloads/{workload}"))["clusters"]
    return bool(clusters) and all(c["state"] == state for c in clusters)
