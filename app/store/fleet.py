"""The fleet as the overview needs it: every cluster's state in three statements, whatever
the number of clusters.

`fleet_state` is read once for all browsers (by the dashboard's `FleetPulse`), every few
seconds, so it must stay cheap at 10,000 clusters: one scan of `clusters`, one grouped
count of live objects per cluster (a scan of a covering index in cluster order), one
grouped count of recent refusals; never a query per cluster.
`kind_counts` gives the per-kind breakdown for the few clusters a page shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.access.roles import EVERYTHING, ClusterScope
from app.informer.objects import KindKey
from app.store.kinds import count_keys
from app.store.queries import live, scope_condition
from app.store.tables import clusters, rejections, resources

MAX_KIND_COUNT_CLUSTERS = 500


@dataclass(frozen=True, slots=True)
class ClusterState:
    name: str
    labels: dict[str, str]
    online: bool
    last_seen: float
    objects: int
    """Live objects stored."""
    refused: int = 0
    """Messages or objects refused since the window's start (`rejections`, with the
    refusals that rate limiting kept out of the table)."""


async def fleet_state(engine: AsyncEngine, *, refused_since: float) -> list[ClusterState]:
    """Every known cluster, ordered by name, with its live object count and its refusals
    recorded after `refused_since` (epoch seconds)."""
    rows_stmt = select(
        clusters.c.name, clusters.c.labels, clusters.c.online, clusters.c.last_seen
    ).order_by(clusters.c.name)
    objects_stmt = (
        select(resources.c.cluster, func.count()).where(live()).group_by(resources.c.cluster)
    )
    refused_stmt = (
        select(rejections.c.cluster, func.count() + func.sum(rejections.c.suppressed))
        .where(rejections.c.at >= refused_since)
        .group_by(rejections.c.cluster)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(rows_stmt)).all()
        objects = {c: int(n or 0) for c, n in await conn.execute(objects_stmt)}
        refused = {c: int(n or 0) for c, n in await conn.execute(refused_stmt)}
    return [
        ClusterState(
            name,
            dict(labels or {}),
            bool(online),
            float(last_seen or 0.0),
            objects.get(name, 0),
            refused.get(name, 0),
        )
        for name, labels, online, last_seen in rows
    ]


async def kind_counts(engine: AsyncEngine, names: list[str]) -> dict[str, dict[str, int]]:
    """Live objects per kind (keyed for people, as `queries.cluster_rows` keys them) of
    the clusters named, at most `MAX_KIND_COUNT_CLUSTERS` of them."""
    if not names:
        return {}
    stmt = (
        select(resources.c.cluster, resources.c.api_version, resources.c.kind, func.count())
        .where(
            resources.c.cluster.in_(names[:MAX_KIND_COUNT_CLUSTERS]),
            live(),
        )
        .group_by(resources.c.cluster, resources.c.api_version, resources.c.kind)
    )
    per_cluster: dict[str, dict[KindKey, int]] = {}
    async with engine.connect() as conn:
        for cluster, api_version, kind, count in await conn.execute(stmt):
            per_cluster.setdefault(cluster, {})[KindKey(api_version, kind)] = count
    return {c: count_keys(kinds) for c, kinds in per_cluster.items()}


async def first_clusters(
    engine: AsyncEngine, limit: int, *, scope: ClusterScope = EVERYTHING
) -> list[tuple[str, dict[str, str]]]:
    """Name and labels of the first `limit` clusters in `scope`, by name: enough to tell a
    small fleet (fewer than `limit`) from a large one without reading it all."""
    stmt = select(clusters.c.name, clusters.c.labels).order_by(clusters.c.name).limit(limit)
    if not scope.everything:
        stmt = stmt.where(scope_condition(scope, clusters.c.name))
    async with engine.connect() as conn:
        return [(name, dict(labels or {})) for name, labels in await conn.execute(stmt)]
