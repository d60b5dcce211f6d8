"""Periodic upkeep: trim the change log, the dead letters and the audit log, forget old
tombstones and expired sign-ins, notice silent clusters.

Every write takes the hub's write lock (the writer's), so upkeep and ingest never collide
inside SQLite, whose busy handler would sleep up to 100 ms on each collision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import nullcontext

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.access import drop_expired
from app.store.audit import trim_audit
from app.store.records import ClusterStatus
from app.store.rejections import trim_rejections
from app.store.tables import changes, clusters, resources

DELETE_CHUNK = 2_000
"""Rows deleted per transaction: each holds SQLite's write lock, which ingest waits for."""


async def trim_changes(engine: AsyncEngine, retain: int, lock: asyncio.Lock | None = None) -> int:
    """Keep the newest `retain` changes; older revisions answer SSE resumes with RESET.

    Deleted oldest first, in small transactions, so ingest never waits long for the lock.
    """
    async with engine.connect() as conn:
        oldest, newest = (
            await conn.execute(select(func.min(changes.c.revision), func.max(changes.c.revision)))
        ).one()
    if newest is None or newest - oldest < retain:
        return 0
    cutoff = newest - retain
    deleted = 0
    for upto in range(oldest + DELETE_CHUNK - 1, cutoff + DELETE_CHUNK, DELETE_CHUNK):
        async with lock or nullcontext(), engine.begin() as conn:
            result = await conn.execute(
                delete(changes).where(changes.c.revision <= min(upto, cutoff))
            )
        deleted += int(result.rowcount or 0)
    return deleted


async def drop_tombstones(
    engine: AsyncEngine, older_than: float, lock: asyncio.Lock | None = None
) -> int:
    """Tombstones only need to outlive a late, older event; after `older_than` they go."""
    deleted = 0
    while True:
        async with lock or nullcontext(), engine.begin() as conn:
            ids = (
                select(resources.c.id)
                .where(resources.c.deleted.is_(True), resources.c.updated_at < older_than)
                .limit(DELETE_CHUNK)
            )
            result = await conn.execute(delete(resources).where(resources.c.id.in_(ids)))
        count = int(result.rowcount or 0)
        deleted += count
        if count < DELETE_CHUNK:
            return deleted


async def mark_silent_offline(
    engine: AsyncEngine, heartbeats: float, now: float, lock: asyncio.Lock | None = None
) -> list[ClusterStatus]:
    """Clusters silent for `heartbeats` heartbeat periods are offline, last will or not."""
    silent = clusters.c.online.is_(True) & (
        clusters.c.last_seen < now - clusters.c.heartbeat_s * heartbeats
    )
    async with lock or nullcontext(), engine.begin() as conn:
        rows = await conn.execute(select(clusters.c.name, clusters.c.last_seen).where(silent))
        found = [ClusterStatus(name, False, last_seen) for name, last_seen in rows]
        if found:
            await conn.execute(
                update(clusters)
                .where(clusters.c.name.in_([c.name for c in found]), silent)
                .values(online=False)
            )
    return found


async def run_once(
    engine: AsyncEngine,
    *,
    retain_changes: int,
    tombstone_ttl_s: float,
    offline_after_heartbeats: float,
    retain_rejections: int = 10_000,
    retain_audit: int = 100_000,
    lock: asyncio.Lock | None = None,
    clock: Callable[[], float] = time.time,
    ingest_lag_s: float = 0.0,
) -> list[ClusterStatus]:
    """One pass of upkeep. `ingest_lag_s`: how long the oldest message ingest holds has
    waited. Silence is measured on the clock minus that lag: a hub behind on its backlog
    (a connect storm of 10,000 agents) holds the heartbeats that would show the clusters
    alive, and must not declare them offline meanwhile."""
    now = clock()
    await trim_changes(engine, retain_changes, lock)
    await trim_rejections(engine, retain_rejections, lock)
    await trim_audit(engine, retain_audit, lock)
    await drop_expired(engine, now, lock)
    await drop_tombstones(engine, now - tombstone_ttl_s, lock)
    return await mark_silent_offline(engine, offline_after_heartbeats, now - ingest_lag_s, lock)
