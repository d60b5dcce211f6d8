"""How far workloads got, in SQL: deliveries counted by state, and one page of a workload's
clusters at a time, whatever the fleet's size.

Both see only the deliveries to clusters in the principal's scope (by the clusters' stored
labels, as `queries.scope_condition` judges them everywhere else).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.roles import EVERYTHING, ClusterScope
from app.informer.selectors import LabelSelector
from app.store.delivery_state import STATES, State, rank_sql, state_sql
from app.store.queries import scope_condition
from app.store.tables import deliveries
from app.store.workloads import DeliveryRow, _delivery

MAX_PAGE_SIZE = 200

StateCounts = dict[State, int]


def _in_scope(scope: ClusterScope) -> list[ColumnElement[bool]]:
    return [] if scope.everything else [scope_condition(scope, deliveries.c.cluster)]


async def state_counts(
    engine: AsyncEngine,
    workloads: Sequence[str] | None = None,
    *,
    scope: ClusterScope = EVERYTHING,
) -> dict[str, StateCounts]:
    """Workload -> deliveries per state (states without any left out): one grouped query
    for all of `workloads` (None: every workload)."""
    state = state_sql(deliveries)
    stmt = (
        select(deliveries.c.workload, state, func.count())
        .where(*_in_scope(scope))
        .group_by(deliveries.c.workload, state)
    )
    if workloads is not None:
        if not workloads:
            return {}
        stmt = stmt.where(deliveries.c.workload.in_(list(workloads)))
    out: dict[str, StateCounts] = {}
    async with engine.connect() as conn:
        for workload, name, count in await conn.execute(stmt):
            out.setdefault(workload, {})[name] = int(count)
    return {w: {s: counts[s] for s in STATES if s in counts} for w, counts in out.items()}


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    states: tuple[State, ...] = ()
    """Only these states (empty: any)."""
    cluster_contains: str = ""
    """Case-insensitive substring of the cluster name."""
    labels: LabelSelector = field(default_factory=LabelSelector)
    """Clusters whose labels match."""
    scope: ClusterScope = EVERYTHING


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    rows: list[DeliveryRow]
    total: int
    """Deliveries matching the filter, over every page."""


async def delivery_page(
    engine: AsyncEngine,
    workload: str,
    wanted: DeliveryFilter,
    *,
    offset: int = 0,
    limit: int = 50,
) -> DeliveryPage:
    """The workload's deliveries that match, problems first then by cluster name, from
    `offset` (rows are few per workload, at most one per cluster: an offset is cheap)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    state = state_sql(deliveries)
    conds: list[ColumnElement[bool]] = [deliveries.c.workload == workload, *_in_scope(wanted.scope)]
    if wanted.states:
        conds.append(state.in_(list(wanted.states)))
    if wanted.cluster_contains:
        name = func.lower(deliveries.c.cluster)
        conds.append(name.contains(wanted.cluster_contains.lower(), autoescape=True))
    if wanted.labels:
        labelled = ClusterScope(wanted.labels.canonical(), wanted.labels)
        conds.append(scope_condition(labelled, deliveries.c.cluster))
    rows_stmt = (
        select(deliveries)
        .where(*conds)
        .order_by(rank_sql(state), deliveries.c.cluster)
        .offset(max(0, offset))
        .limit(limit)
    )
    count_stmt = select(func.count()).select_from(deliveries).where(*conds)
    async with engine.connect() as conn:
        total = int(await conn.scalar(count_stmt) or 0)
        rows = [_delivery(r) for r in await conn.execute(rows_stmt)]
    return DeliveryPage(rows, total)
