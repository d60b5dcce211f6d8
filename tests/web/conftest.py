"""A live hub over a database filled straight through the writer (no agent needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.broker import Mosquitto
from app.informer.deltas import ClusterHello, Upsert
from app.informer.objects import KindKey
from app.store.writer import InventoryWriter
from tests.harness import LiveHub, live_hub
from tests.objects import event

EVENTS = "events.k8s.io/v1"
CORE_EVENT = KindKey("v1", "Event")
GROUP_EVENT = KindKey(EVENTS, "Event")


@pytest.fixture
async def two_events_hub(
    broker: Mosquitto, engine: AsyncEngine, database_url: str
) -> AsyncIterator[LiveHub]:
    """c1 holds `default/x` as a core Event and as an events.k8s.io Event, a core Event
    `default/y` and a Pod; c2 holds one events.k8s.io Event only."""
    await InventoryWriter(engine).apply(
        [
            ClusterHello("c1", {}, (CORE_EVENT, GROUP_EVENT, KindKey("v1", "Pod")), 5, "1"),
            ClusterHello("c2", {}, (GROUP_EVENT,), 5, "1"),
            Upsert("c1", event("ADDED", "x", 1, kind="Event", uid="core-x")),
            Upsert("c1", event("ADDED", "y", 2, kind="Event", uid="core-y")),
            Upsert("c1", event("ADDED", "x", 3, kind="Event", api_version=EVENTS, uid="grp-x")),
            Upsert("c1", event("ADDED", "p", 4, uid="pod-p")),
            Upsert("c2", event("ADDED", "z", 5, kind="Event", api_version=EVENTS, uid="grp-z")),
        ]
    )
    async with live_hub(broker_url=broker.url, database_url=database_url) as hub:
        yield hub


@pytest.fixture
async def fleet_hub(
    broker: Mosquitto, engine: AsyncEngine, database_url: str
) -> AsyncIterator[LiveHub]:
    """dev-1 (env=dev) and prod-1 (env=prod), both region=eu, each with a Pod `web-<env>`
    labelled app=web and a ConfigMap; the hub started after they were stored."""
    pod_kind, cm_kind = KindKey("v1", "Pod"), KindKey("v1", "ConfigMap")
    deltas: list[Any] = []
    for n, (cluster, env) in enumerate((("dev-1", "dev"), ("prod-1", "prod"))):
        labels = {"env": env, "region": "eu"}
        deltas += [
            ClusterHello(cluster, labels, (pod_kind, cm_kind), 5, "1"),
            Upsert(cluster, event("ADDED", f"web-{env}", 10 * n + 1, labels={"app": "web"})),
            Upsert(cluster, event("ADDED", f"cfg-{env}", 10 * n + 2, kind="ConfigMap")),
        ]
    await InventoryWriter(engine).apply(deltas)
    async with live_hub(broker_url=broker.url, database_url=database_url) as hub:
        yield hub
