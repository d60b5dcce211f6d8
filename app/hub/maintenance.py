"""Periodic upkeep: trim the change log, forget old tombstones, notice silent clusters."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store.records import ClusterStatus
from app.store.tables import changes, clusters, resources


async def trim_changes(engine: AsyncEngine, retain: int) -> int:
    """Keep the newest `retain` changes; older revisions answer SSE resumes with RESET."""
    async with engine.begin() as conn:
        newest = await conn.scalar(select(func.max(changes.c.revision)))
        if newest is None or newest <= retain:
            return 0
        result = await conn.execute(delete(changes).where(changes.c.revision <= newest - retain))
    return int(result.rowcount or 0)


async def drop_tombstones(engine: AsyncEngine, older_than: float) -> int:
    """Tombstones only need to outlive a late, older event; after `older_than` they go."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(resources).where(
                resources.c.deleted.is_(True), resources.c.updated_at < older_than
            )
        )
    return int(result.rowcount or 0)


async def mark_silent_offline(
    engine: AsyncEngine, heartbeats: float, now: float
) -> list[ClusterStatus]:
    """Clusters silent for `heartbeats` heartbeat periods are offline, last will or not."""
    silent = clusters.c.online.is_(True) & (
        clusters.c.last_seen < now - clusters.c.heartbeat_s * heartbeats
    )
    async with engine.begin() as conn:
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
    clock: Callable[[], float] = time.time,
) -> list[ClusterStatus]:
    now = clock()
    await trim_changes(engine, retain_changes)
    await drop_tombstones(engine, now - tombstone_ttl_s)
    return await mark_silent_offline(engine, offline_after_heartbeats, now)
