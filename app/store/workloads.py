"""Workloads and their per-cluster deliveries (the outbox), in SQL.

Every write here runs under the writer's lock (`lock`), as upkeep does, so it never collides
with ingest inside SQLite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.audit import AuditRecord, add_audit
from app.store.delivery_state import State, delivery_state, health_of
from app.store.tables import clusters, deliveries, workloads


class WorkloadExists(ValueError):
    pass


class WorkloadNotFound(KeyError):
    pass


@dataclass(frozen=True, slots=True)
class WorkloadRow:
    name: str
    manifests: list[dict[str, Any]]
    version: int
    update_strategy: str
    delete_option: str
    feedback_rules: list[dict[str, Any]]
    placement: dict[str, Any]
    deleting: bool
    created_at: float
    updated_at: float
    scope: str = ""
    """The cluster scope it is confined to (see `tables.Workload.scope`)."""


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    workload: str
    cluster: str
    version_wanted: int
    version_sent: int
    version_acked: int
    removing: bool
    conditions: list[dict[str, Any]]
    feedback: dict[str, Any]
    last_error: str
    status_hash: str
    attempts: int
    next_send_at: float
    sent_at: float
    updated_at: float
    health: str = ""
    """What the conditions say once applied (`delivery_state.health_of`)."""

    @property
    def state(self) -> State:
        """See `app.store.delivery_state`; SQL computes the same (`state_sql`)."""
        return delivery_state(
            removing=self.removing,
            version_wanted=self.version_wanted,
            version_sent=self.version_sent,
            version_acked=self.version_acked,
            last_error=self.last_error,
            health=self.health,
        )


def _workload(row: Any) -> WorkloadRow:
    return WorkloadRow(
        row.name,
        row.manifests,
        row.version,
        row.update_strategy,
        row.delete_option,
        row.feedback_rules,
        row.placement,
        row.deleting,
        row.created_at,
        row.updated_at,
        row.scope,
    )


def _delivery(row: Any) -> DeliveryRow:
    m = row._mapping
    return DeliveryRow(**{k: m[k] for k in DeliveryRow.__slots__})


def _locked(lock: asyncio.Lock | None) -> Any:
    return lock or nullcontext()


# -- workloads ------------------------------------------------------------------------------


async def create_workload(
    engine: AsyncEngine,
    values: dict[str, Any],
    now: float,
    lock: asyncio.Lock | None = None,
    *,
    audit: AuditRecord | None = None,
) -> WorkloadRow:
    """Store a new workload (with its audit entry, in one transaction)."""
    async with _locked(lock), engine.begin() as conn:
        existing = await conn.scalar(
            select(workloads.c.name).where(workloads.c.name == values["name"])
        )
        if existing is not None:
            raise WorkloadExists(f"workload {values['name']!r} exists; PUT to change it")
        row = {**values, "version": 1, "deleting": False, "created_at": now, "updated_at": now}
        await conn.execute(workloads.insert().values(**row))
        stored = (
            await conn.execute(select(workloads).where(workloads.c.name == values["name"]))
        ).one()
        if audit is not None:
            await add_audit(conn, audit)
    return _workload(stored)


def _visible(row: Any, scope: str | None) -> bool:
    """A workload is visible to a scoped principal only if it was written with exactly
    that scope; `scope` None: to anyone (an unscoped principal)."""
    return scope is None or row.scope == scope


async def update_workload(
    engine: AsyncEngine,
    values: dict[str, Any],
    now: float,
    lock: asyncio.Lock | None = None,
    *,
    scope: str | None = None,
    audit: AuditRecord | None = None,
) -> WorkloadRow:
    """A new version; WorkloadNotFound if there is none (or it is being deleted, or not
    visible with `scope`)."""
    async with _locked(lock), engine.begin() as conn:
        current = (
            await conn.execute(select(workloads).where(workloads.c.name == values["name"]))
        ).first()
        if current is None or current.deleting or not _visible(current, scope):
            raise WorkloadNotFound(values["name"])
        version = current.version + 1
        await conn.execute(
            update(workloads)
            .where(workloads.c.name == values["name"])
            .values(**values, version=version, updated_at=now)
        )
        row = (
            await conn.execute(select(workloads).where(workloads.c.name == values["name"]))
        ).one()
        if audit is not None:
            await add_audit(conn, audit)
    return _workload(row)


async def mark_deleting(
    engine: AsyncEngine,
    name: str,
    now: float,
    lock: asyncio.Lock | None = None,
    *,
    scope: str | None = None,
    audit: AuditRecord | None = None,
) -> None:
    conds = [workloads.c.name == name, workloads.c.deleting.is_(False)]
    if scope is not None:
        conds.append(workloads.c.scope == scope)
    async with _locked(lock), engine.begin() as conn:
        result = await conn.execute(
            update(workloads).where(*conds).values(deleting=True, updated_at=now)
        )
        if not result.rowcount:
            raise WorkloadNotFound(name)
        if audit is not None:
            await add_audit(conn, audit)


async def get_workload(
    engine: AsyncEngine, name: str, *, scope: str | None = None
) -> WorkloadRow | None:
    """The workload, None if there is none or it is not visible with `scope`."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(workloads).where(workloads.c.name == name))).first()
    return _workload(row) if row and _visible(row, scope) else None


async def list_workloads(engine: AsyncEngine, *, scope: str | None = None) -> list[WorkloadRow]:
    stmt = select(workloads).order_by(workloads.c.name)
    if scope is not None:
        stmt = stmt.where(workloads.c.scope == scope)
    async with engine.connect() as conn:
        return [_workload(r) for r in await conn.execute(stmt)]


# -- deliveries -----------------------------------------------------------------------------


async def deliveries_of(engine: AsyncEngine, workload: str | None = None) -> list[DeliveryRow]:
    stmt = select(deliveries).order_by(deliveries.c.workload, deliveries.c.cluster)
    if workload is not None:
        stmt = stmt.where(deliveries.c.workload == workload)
    async with engine.connect() as conn:
        return [_delivery(r) for r in await conn.execute(stmt)]


async def cluster_labels(engine: AsyncEngine) -> dict[str, dict[str, str]]:
    async with engine.connect() as conn:
        return {
            name: labels
            for name, labels in await conn.execute(select(clusters.c.name, clusters.c.labels))
        }


@dataclass(frozen=True, slots=True)
class Wanted:
    """What one workload should be on one cluster after a placement decision."""

    workload: str
    cluster: str
    version: int


async def sync_deliveries(
    engine: AsyncEngine,
    wanted: Iterable[Wanted],
    finished: Iterable[str],
    now: float,
    lock: asyncio.Lock | None = None,
) -> int:
    """Make the outbox match the placement decisions; return how many rows changed.

    New pairs are added, changed versions re-armed for sending, pairs no longer wanted marked
    `removing` (or dropped if never sent); workloads in `finished` (deleted, with no delivery
    left) are removed.
    """
    want = {(w.workload, w.cluster): w.version for w in wanted}
    changed = 0
    async with _locked(lock), engine.begin() as conn:
        have = {
            (r.workload, r.cluster): _delivery(r) for r in await conn.execute(select(deliveries))
        }
        added: list[dict[str, Any]] = []
        rearmed: list[dict[str, Any]] = []
        for (workload, cluster), version in want.items():
            row = have.get((workload, cluster))
            if row is None:
                added.append(_new_delivery(workload, cluster, version, now))
            elif row.version_wanted != version or row.removing:
                rearmed.append({"w": workload, "c": cluster, "v": version})
        # one statement each, however many clusters: a workload placed on (or changed on)
        # thousands of clusters holds the writer's lock for one executemany, not thousands
        if added:
            await conn.execute(deliveries.insert(), added)
        if rearmed:
            await conn.execute(_REARM_VERSION.values(updated_at=now), rearmed)
        changed += len(added) + len(rearmed)
        for (workload, cluster), row in have.items():
            if (workload, cluster) in want or row.removing:
                continue
            if row.version_sent == 0:  # never left the hub: nothing to take back
                await conn.execute(
                    delete(deliveries).where(
                        deliveries.c.workload == workload, deliveries.c.cluster == cluster
                    )
                )
            else:
                await _rearm(conn, workload, cluster, removing=True, now=now)
            changed += 1
        for name in finished:
            await conn.execute(
                delete(workloads).where(workloads.c.name == name, workloads.c.deleting.is_(True))
            )
    return changed


def _new_delivery(workload: str, cluster: str, version: int, now: float) -> dict[str, Any]:
    return {
        "workload": workload,
        "cluster": cluster,
        "version_wanted": version,
        "version_sent": 0,
        "version_acked": 0,
        "removing": False,
        "conditions": [],
        "feedback": {},
        "last_error": "",
        "status_hash": "",
        "attempts": 0,
        "next_send_at": 0.0,
        "sent_at": 0.0,
        "updated_at": now,
    }


_THIS_DELIVERY = (deliveries.c.workload == bindparam("w")) & (
    deliveries.c.cluster == bindparam("c")
)
"""The row of (workload `w`, cluster `c`), for statements run with many parameter sets."""
_REARM_VERSION = (
    update(deliveries)
    .where(_THIS_DELIVERY)
    .values(version_wanted=bindparam("v"), removing=False, attempts=0, next_send_at=0.0)
)


async def _rearm(
    conn: AsyncConnection, workload: str, cluster: str, *, now: float, **values: Any
) -> None:
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.workload == workload, deliveries.c.cluster == cluster)
        .values(**values, attempts=0, next_send_at=0.0, updated_at=now)
    )


async def due_deliveries(engine: AsyncEngine, now: float, limit: int = 200) -> list[DeliveryRow]:
    """Rows whose cluster is not where the hub wants it, and whose resend time has come."""
    stmt = (
        select(deliveries)
        .where(
            deliveries.c.next_send_at <= now,
            (deliveries.c.version_acked != deliveries.c.version_wanted)
            | deliveries.c.removing.is_(True),
        )
        .order_by(deliveries.c.next_send_at)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [_delivery(r) for r in await conn.execute(stmt)]


async def mark_sent(
    engine: AsyncEngine,
    sent: Sequence[tuple[DeliveryRow, float]],
    now: float,
    lock: asyncio.Lock | None = None,
) -> None:
    if not sent:
        return
    stmt = (
        update(deliveries)
        .where(_THIS_DELIVERY)
        .values(
            version_sent=bindparam("v"),
            attempts=bindparam("a"),
            sent_at=now,
            next_send_at=bindparam("n"),
        )
    )
    params = [
        {"w": r.workload, "c": r.cluster, "v": r.version_wanted, "a": r.attempts + 1, "n": n}
        for r, n in sent
    ]
    async with _locked(lock), engine.begin() as conn:
        await conn.execute(stmt, params)  # one executemany for the whole pass


async def record_status(
    engine: AsyncEngine,
    cluster: str,
    statuses: Sequence[Any],
    now: float,
    lock: asyncio.Lock | None = None,
) -> list[str]:
    """`record_statuses` of one cluster."""
    return await record_statuses(engine, [(cluster, s) for s in statuses], now, lock)


async def record_statuses(
    engine: AsyncEngine,
    statuses: Sequence[tuple[str, Any]],
    now: float,
    lock: asyncio.Lock | None = None,
) -> list[str]:
    """Apply agents' status messages, (cluster, status) in arrival order, in one
    transaction; return the workloads whose delivery state changed.

    A status for a version older than wanted only updates conditions if it is for the acked
    version; a removal ack deletes the row.
    """
    touched: list[str] = []
    async with _locked(lock), engine.begin() as conn:
        for cluster, status in statuses:
            where = (deliveries.c.workload == status.workload) & (deliveries.c.cluster == cluster)
            row = (await conn.execute(select(deliveries).where(where))).first()
            if row is None:
                continue
            if status.removed:
                if row.removing:
                    await conn.execute(delete(deliveries).where(where))
                    touched.append(status.workload)
                continue
            if row.removing or status.version > row.version_wanted:
                continue
            await conn.execute(
                update(deliveries)
                .where(where)
                .values(
                    version_acked=max(row.version_acked, status.version),
                    conditions=status.conditions,
                    health=health_of(status.conditions),
                    feedback=status.feedback,
                    last_error=status.error,
                    status_hash=status.status_hash,
                    updated_at=now,
                )
            )
            touched.append(status.workload)
    return touched


async def resync_cluster(
    engine: AsyncEngine,
    cluster: str,
    held: dict[str, int],
    now: float,
    lock: asyncio.Lock | None = None,
) -> list[str]:
    """An agent (re)connected holding `held`: send now whatever it lacks; return the names it
    holds that the hub does not place there (to be removed)."""
    async with _locked(lock), engine.begin() as conn:
        rows = {
            r.workload: _delivery(r)
            for r in await conn.execute(select(deliveries).where(deliveries.c.cluster == cluster))
        }
        for name, row in rows.items():
            version = held.get(name, 0)
            behind = not row.removing and version < row.version_wanted
            if behind or (row.removing and name in held):
                await _rearm(
                    conn, name, cluster, version_acked=min(version, row.version_acked), now=now
                )
            elif row.removing and name not in held:
                await conn.execute(
                    delete(deliveries).where(
                        deliveries.c.workload == name, deliveries.c.cluster == cluster
                    )
                )
    return [name for name in held if name not in rows]


async def status_hashes(engine: AsyncEngine, cluster: str) -> dict[str, str]:
    """The status hash the hub holds per workload placed on `cluster`."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(deliveries.c.workload, deliveries.c.status_hash).where(
                deliveries.c.cluster == cluster, deliveries.c.removing.is_(False)
            )
        )
        return {w: h for w, h in rows}
