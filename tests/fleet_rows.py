"""A simulated fleet written straight into the store: thousands of clusters without agents.

The browser tests at 1,000 clusters and `bench/overview_load.py` at 10,000 need clusters
that exist, with labels, objects and a state, but no MQTT connection each. They are
written through `InventoryWriter` (hellos and objects, as ingest would write them); their
hello announces a heartbeat of a day, so the hub's upkeep leaves them online, and every
`offline_every`-th cluster is then marked offline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.informer.deltas import ClusterHello, ClusterOffline, Delta, Upsert
from app.informer.objects import KindKey, WatchEvent
from app.store import workloads as store
from app.store.workloads import Wanted
from app.store.writer import InventoryWriter
from app.transport.messages import WorkloadStatus
from tests.objects import pod

ENVS = ("prod", "staging", "dev")
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
KINDS = (KindKey("v1", "Pod"), KindKey("v1", "ConfigMap"), KindKey("apps/v1", "Deployment"))
A_DAY_S = 86_400.0
BATCH = 5_000


@dataclass(frozen=True, slots=True)
class SimFleet:
    clusters: int = 1_000
    objects: int = 10
    """Objects per cluster (Pods, ConfigMaps and Deployments in turn)."""
    offline_every: int = 50
    """Every n-th cluster is offline (0: none)."""
    prefix: str = "sim"

    def name(self, index: int) -> str:
        return f"{self.prefix}-{index:05d}"

    def labels(self, index: int) -> dict[str, str]:
        return {
            "env": ENVS[index % len(ENVS)],
            "region": REGIONS[(index // len(ENVS)) % len(REGIONS)],
            "fleet": "sim",
        }

    def offline(self, index: int) -> bool:
        return bool(self.offline_every) and index % self.offline_every == self.offline_every - 1

    def deltas(self, index: int) -> list[Delta]:
        cluster = self.name(index)
        out: list[Delta] = [ClusterHello(cluster, self.labels(index), KINDS, A_DAY_S, "sim")]
        for n in range(self.objects):
            kind = KINDS[n % len(KINDS)]
            body = pod(f"obj-{n:04d}", n + 1, kind=kind.kind, api_version=kind.api_version)
            out.append(Upsert(cluster, WatchEvent.of("ADDED", body)))
        if self.offline(index):
            out.append(ClusterOffline(cluster, "simulated"))
        return out


async def write_fleet(engine: AsyncEngine, fleet: SimFleet) -> None:
    """Write every cluster of `fleet` (in batches of about `BATCH` rows)."""
    writer = InventoryWriter(engine)
    batch: list[Delta] = []
    for index in range(fleet.clusters):
        batch += fleet.deltas(index)
        if len(batch) >= BATCH:
            await writer.apply(batch)
            batch = []
    if batch:
        await writer.apply(batch)


CONDITIONS = {
    "Available": [{"type": "Available", "status": "True"}],
    "Degraded": [{"type": "Available", "status": "True"}, {"type": "Degraded", "status": "True"}],
}
FAR_FUTURE = 4e9
"""A resend time the dispatcher never reaches: a row seeded Delivered stays Delivered."""


def spread(index: int) -> str:
    """A rollout partly done: 60% Available, then Applied, Delivered, Pending, and one in
    ten Degraded or Failed (alternately)."""
    states = ("Available",) * 6 + ("Applied", "Delivered", "Pending")
    return states[index % 10] if index % 10 < 9 else ("Degraded", "Failed")[index // 10 % 2]


async def write_rollout(
    engine: AsyncEngine,
    workload: str,
    clusters: Sequence[str],
    placement: dict[str, object],
    state: Callable[[int], str] = spread,
    *,
    scope: str = "",
) -> None:
    """Create `workload` (version 1) placed on `clusters`, and bring the delivery to the
    i-th cluster to `state(i)` through the outbox's own writes (`mark_sent`,
    `record_status`), as the dispatcher and the agents' acknowledgements would."""
    now = time.time()
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": workload, "namespace": "shop"},
    }
    await store.create_workload(
        engine,
        {
            "name": workload,
            "manifests": [manifest],
            "update_strategy": "ServerSideApply",
            "delete_option": "Foreground",
            "feedback_rules": [],
            "placement": placement,
            "scope": scope,
        },
        now,
    )
    kept = [  # sync_deliveries reconciles the whole outbox: keep the other workloads'
        Wanted(r.workload, r.cluster, r.version_wanted)
        for r in await store.deliveries_of(engine)
        if not r.removing
    ]
    fresh = [Wanted(workload, c, 1) for c in clusters]
    await store.sync_deliveries(engine, kept + fresh, [], now)
    rows = {r.cluster: r for r in await store.deliveries_of(engine, workload)}
    wanted = {c: state(i) for i, c in enumerate(clusters)}
    sent = [(rows[c], FAR_FUTURE) for c, s in wanted.items() if s != "Pending"]
    await store.mark_sent(engine, sent, now)
    for cluster, s in wanted.items():
        if s in ("Pending", "Delivered"):
            continue
        status = WorkloadStatus(
            workload,
            1,
            False,
            CONDITIONS.get(s, []),
            {},
            "apply failed: simulated" if s == "Failed" else "",
            s,
        )
        await store.record_status(engine, cluster, [status], now)
