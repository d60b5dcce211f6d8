"""The audit log: who changed what, when and from where, newest first, trimmed.

Changes record their entry in the transaction that makes them (`add_audit` on its
connection), so a change is never without its entry nor an entry without its change.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypedDict

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.tables import audit_log

MAX_LIMIT = 500


class AuditRecord(TypedDict):
    at: float
    actor: str
    role: str
    via: str
    scope: str
    source: str
    action: str
    """`workload.create`, `workload.update`, `workload.delete`, `token.create`,
    `token.revoke`, `cluster.add`, `cluster.remove`, `signin`, `signin.failed`, `signout`."""
    target: str
    outcome: str
    """`ok`, or `denied` (refused by the admission policy or for want of a role)."""
    detail: str


async def add_audit(conn: AsyncConnection, record: AuditRecord) -> None:
    """Insert inside the caller's transaction."""
    clipped = {k: v[:2000] if isinstance(v, str) else v for k, v in record.items()}
    for short in ("actor", "source"):
        clipped[short] = str(clipped[short])[:253]
    await conn.execute(insert(audit_log).values(**clipped))


async def write_audit(
    engine: AsyncEngine, record: AuditRecord, lock: asyncio.Lock | None = None
) -> None:
    """An entry of its own (a refusal, a failed sign-in)."""
    async with lock or nullcontext(), engine.begin() as conn:
        await add_audit(conn, record)


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[dict[str, Any]]
    next_before: int | None


async def list_audit(
    engine: AsyncEngine,
    *,
    limit: int = 100,
    before: int | None = None,
    action: str | None = None,
    actor: str | None = None,
    scope: str | None = None,
) -> AuditPage:
    """Newest first. `scope`: only entries made with exactly this cluster scope."""
    limit = max(1, min(limit, MAX_LIMIT))
    stmt = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
    if before is not None:
        stmt = stmt.where(audit_log.c.id < before)
    if action:
        stmt = stmt.where(audit_log.c.action == action)
    if actor:
        stmt = stmt.where(audit_log.c.actor == actor)
    if scope is not None:
        stmt = stmt.where(audit_log.c.scope == scope)
    async with engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(stmt)]
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, rows[-1]["id"] if more and rows else None)


async def trim_audit(engine: AsyncEngine, retain: int, lock: asyncio.Lock | None = None) -> int:
    """Keep the newest `retain` entries."""
    async with engine.connect() as conn:
        newest = await conn.scalar(select(func.max(audit_log.c.id)))
    if newest is None or newest <= retain:
        return 0
    async with lock or nullcontext(), engine.begin() as conn:
        result = await conn.execute(delete(audit_log).where(audit_log.c.id <= newest - retain))
    return int(result.rowcount or 0)
