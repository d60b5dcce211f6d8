"""The dead-letter table: reading it (`GET /rejections`, the cluster page) and trimming it."""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.roles import EVERYTHING, ClusterScope
from app.store.queries import scope_condition
from app.store.tables import rejections

MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class RejectionPage:
    items: list[dict[str, Any]]
    next_before: int | None
    """Pass as `before` for older rows; None when there are none."""


async def list_rejections(
    engine: AsyncEngine,
    *,
    cluster: str | None = None,
    reason: str | None = None,
    limit: int = 100,
    before: int | None = None,
    scope: ClusterScope = EVERYTHING,
) -> RejectionPage:
    """Newest first; only clusters in `scope` (by the name the sender claimed)."""
    limit = max(1, min(limit, MAX_LIMIT))
    stmt = select(rejections).order_by(rejections.c.id.desc()).limit(limit + 1)
    if not scope.everything:
        stmt = stmt.where(scope_condition(scope, rejections.c.cluster))
    if cluster is not None:
        stmt = stmt.where(rejections.c.cluster == cluster)
    if reason is not None:
        stmt = stmt.where(rejections.c.reason == reason)
    if before is not None:
        stmt = stmt.where(rejections.c.id < before)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    return RejectionPage(rows, rows[-1]["id"] if more and rows else None)


async def trim_rejections(
    engine: AsyncEngine, retain: int, lock: asyncio.Lock | None = None
) -> int:
    """Keep the newest `retain` rows."""
    async with engine.connect() as conn:
        newest = await conn.scalar(select(func.max(rejections.c.id)))
    if newest is None or newest <= retain:
        return 0
    async with lock or nullcontext(), engine.begin() as conn:
        result = await conn.execute(delete(rejections).where(rejections.c.id <= newest - retain))
    return int(result.rowcount or 0)
