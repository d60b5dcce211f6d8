"""The fault matrix: one row per fault and database, each an injection into a `Testbed`.

An injection runs while churn goes on, lasts about `params.fault_s`, heals what it broke
(restarts what it stopped) and returns details worth reporting. The runner does the rest:
sync before, churn around, convergence and checks after.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults import postgres
from tests.faults.replay import Replayer
from tests.faults.sqlite_files import immutable, immutable_unsupported
from tests.faults.tap import Tap, partial_snapshot_chunk
from tests.faults.testbed import Needs, Testbed

Details = dict[str, object]
SNAPSHOT_LINK_BYTES_S = 100_000
"""Agent 0's link while its snapshot is cut: a 128 KiB chunk takes over a second."""
COMMIT_S = 0.3
"""Ample time for the hub to commit a chunk it was sent."""
Inject = Callable[[Testbed], Awaitable[Details]]


@dataclass(frozen=True)
class Row:
    fault: str
    inject: Inject
    needs: Needs = field(default_factory=Needs)
    unsupported: Callable[[Path], str | None] | None = None
    """Why this machine cannot inject the fault (the row is then skipped), or None."""

    @property
    def database(self) -> str:
        return self.needs.database

    @property
    def id(self) -> str:
        return f"{re.sub(r'[^a-z0-9]+', '-', self.fault.lower()).strip('-')}-{self.database}"


async def no_fault(bed: Testbed) -> Details:
    await asyncio.sleep(bed.params.fault_s)
    return {}


async def hub_sigkill(bed: Testbed) -> Details:
    bed.hub.kill()
    await asyncio.sleep(bed.params.fault_s)
    bed.hub.start()
    await bed.wait_hub()
    return {}


async def hub_sigterm(bed: Testbed) -> Details:
    await asyncio.to_thread(bed.hub.stop)
    await asyncio.sleep(bed.params.fault_s)
    bed.hub.start()
    await bed.wait_hub()
    return {}


async def hub_sigkill_mid_snapshot(bed: Testbed) -> Details:
    """Cluster 0's watches expire (410), so its agent relists every kind, over a link
    throttled to SNAPSHOT_LINK_BYTES_S. When a Pod chunk with more to come reaches the broker,
    the link stalls (the next chunk is still on its way), the hub gets COMMIT_S to commit
    what it has and is killed, the link resumes, and the broker queues the rest of the cut
    snapshot for the hub, which comes back to it."""
    assert bed.agent_proxy is not None
    async with Tap(bed.broker.url, bed.clusters[0]) as tap:
        bed.agent_proxy.throttle(SNAPSHOT_LINK_BYTES_S)
        bed.apis[0].expire_watches()
        chunk = await tap.wait_for(partial_snapshot_chunk("Pod"), 30)  # the most chunks
        bed.agent_proxy.stall()
    await asyncio.sleep(COMMIT_S)
    bed.hub.kill()
    bed.agent_proxy.throttle(None)
    bed.agent_proxy.resume()
    await asyncio.sleep(bed.params.fault_s / 2)
    bed.hub.start()
    await bed.wait_hub()
    await asyncio.sleep(bed.params.fault_s / 2)
    data = chunk["data"]
    return {"killed after chunk": f"{data['kind']} #{data['chunk']}"}


async def agent_sigkill(bed: Testbed) -> Details:
    async with bed.agent_stopped(0, kill=True):
        await asyncio.sleep(bed.params.fault_s)  # changes go on while it is down
    return {}


async def agent_sigterm(bed: Testbed) -> Details:
    async with bed.agent_stopped(0, kill=False):
        await asyncio.sleep(bed.params.fault_s)
    return {}


def broker_restart(*, kill: bool, persistence: str) -> Inject:
    async def inject(bed: Testbed) -> Details:
        saved = None
        if persistence == "stale":
            saved = await asyncio.to_thread(bed.broker.save_db)
            await asyncio.sleep(bed.params.fault_s / 2)  # acknowledged after the copy
        await asyncio.to_thread(bed.broker.stop, kill)
        await asyncio.sleep(bed.params.fault_s / (2 if saved else 1))
        await asyncio.to_thread(bed.broker.start_with, persistence, saved)
        return {}

    return inject


async def pg_terminate_backends(bed: Testbed) -> Details:
    killed = await postgres.terminate_backends(bed.database, for_s=bed.params.fault_s)
    return {"backends terminated": killed}


async def pg_lock_revision_counter(bed: Testbed) -> Details:
    await postgres.lock_table(bed.database, "revision_counter", for_s=bed.params.fault_s)
    return {}


async def redis_cut(bed: Testbed) -> Details:
    assert bed.redis_proxy is not None
    bed.redis_proxy.drop()
    await asyncio.sleep(bed.params.fault_s)
    bed.redis_proxy.resume()
    return {}


def sqlite_immutable(*suffixes: str) -> Inject:
    async def inject(bed: Testbed) -> Details:
        paths = [Path(bed.database + suffix) for suffix in suffixes]
        with immutable(paths) as done:
            await asyncio.sleep(bed.params.fault_s)
        return {"immutable": [p.name for p in done]}

    return inject


def partition(mode: str) -> Inject:
    async def inject(bed: Testbed) -> Details:
        assert bed.agent_proxy is not None
        bed.agent_proxy.stall() if mode == "stall" else bed.agent_proxy.drop()
        await asyncio.sleep(bed.params.fault_s)
        bed.agent_proxy.resume()
        return {}

    return inject


async def duplicated_and_reordered(bed: Testbed) -> Details:
    async with Replayer(bed.broker.url, seed=bed.params.seed) as replayer:
        counts = await replayer.run(for_s=bed.params.fault_s)
    return {"duplicated": counts.duplicated, "reordered": counts.reordered}


async def cluster_recreated(bed: Testbed) -> Details:
    """Cluster 0 is deleted and created again under the same name: its agent goes with the
    old cluster, the new cluster has the same names with new uids and lower resourceVersions,
    and a new agent lists it."""
    before = bed.apis[0].rv
    async with bed.agent_stopped(0, kill=False):
        bed.apis[0].recreate(start_rv=1000)
        await asyncio.sleep(bed.params.fault_s)
    return {"resourceVersion before": before, "after": bed.apis[0].rv}


async def etcd_rollback(bed: Testbed) -> Details:
    """Cluster 0's etcd is restored from a backup taken `fault_s` earlier (no revision bump):
    its agent keeps running and re-watches from a resourceVersion the server is behind."""
    backup = bed.apis[0].backup()
    await asyncio.sleep(bed.params.fault_s)
    lost = bed.apis[0].rv - backup.rv
    bed.apis[0].restore(backup)
    bed.churns[0].refresh()
    return {"changes rolled back": lost}


SQLITE = Needs("sqlite")
POSTGRES = Needs("postgresql")

MATRIX: tuple[Row, ...] = (
    Row("no fault", no_fault, SQLITE),
    Row("no fault", no_fault, POSTGRES),
    Row("hub SIGKILL", hub_sigkill, SQLITE),
    Row("hub SIGKILL", hub_sigkill, POSTGRES),
    Row("hub SIGTERM", hub_sigterm, SQLITE),
    Row(
        "hub SIGKILL mid-snapshot",
        hub_sigkill_mid_snapshot,
        Needs("sqlite", agent_proxy=True),
    ),
    Row("agent SIGKILL, changes while down", agent_sigkill, SQLITE),
    Row("agent SIGTERM, changes while down", agent_sigterm, SQLITE),
    Row("broker SIGKILL, persistence kept", broker_restart(kill=True, persistence="kept"), SQLITE),
    Row(
        "broker restart without persistence",
        broker_restart(kill=False, persistence="dropped"),
        SQLITE,
    ),
    Row(
        "broker restart with stale persistence",
        broker_restart(kill=False, persistence="stale"),
        SQLITE,
    ),
    Row("PostgreSQL backends terminated", pg_terminate_backends, POSTGRES),
    Row("PostgreSQL revision_counter locked", pg_lock_revision_counter, POSTGRES),
    Row("Redis unreachable", redis_cut, Needs("sqlite", redis=True)),
    Row(
        "SQLite db file immutable",
        sqlite_immutable(""),
        SQLITE,
        unsupported=immutable_unsupported,
    ),
    Row(
        "SQLite -wal/-shm immutable",
        sqlite_immutable("-wal", "-shm"),
        SQLITE,
        unsupported=immutable_unsupported,
    ),
    Row("partition agent-broker (stall)", partition("stall"), Needs("sqlite", agent_proxy=True)),
    Row("partition agent-broker (drop)", partition("drop"), Needs("sqlite", agent_proxy=True)),
    Row("duplicated and reordered messages", duplicated_and_reordered, SQLITE),
    Row("cluster re-created, lower resourceVersions", cluster_recreated, SQLITE),
    Row("etcd restored to an earlier resourceVersion", etcd_rollback, SQLITE),
)
ROWS = {row.id: row for row in MATRIX}
