"""The inventory writer: applies informer deltas to SQL, one transaction per batch.

Contract:
- Atomic: a batch is committed whole or not at all; the caller acknowledges the MQTT
  messages it came from only after `apply` returns (ack after commit).
- Idempotent: an object event whose resourceVersion is not newer than the stored one for
  that key (live or tombstone) changes nothing. Deletes leave tombstones, so a late, older
  ADDED cannot resurrect an object.
- Ordered: every change gets the next global revision from the one-row counter, locked
  first thing in the transaction, so revision order is commit order on SQLite and
  PostgreSQL alike (a sequence would not be).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Text, insert, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.informer.deltas import (
    CheckDigest,
    ClusterHello,
    ClusterOffline,
    ClusterSeen,
    Delta,
    Sweep,
    Upsert,
)
from app.informer.digest import kind_digest
from app.informer.objects import EventType, KindKey, ObjectRef, ResourceKey
from app.store.driver import Driver, driver_for
from app.store.records import Applied, ChangeRecord, ClusterStatus, RejectionRecord
from app.store.statements import Statements
from app.store.tables import clusters, rejections, resources

_PREFETCH_CHUNK = 500


@dataclass(slots=True)
class _Stored:
    resource_version: int
    deleted: bool
    uid: str
    labels: str | None = None
    """The stored selectable labels as JSON text (None once this batch rewrote the row)."""


def selectable_labels(labels: dict[str, str]) -> tuple[dict[str, str], str]:
    """The labels a selector can match, and their JSON: pairs holding U+0000 are left out
    (no selector can name them, and jsonb cannot hold them); the body keeps them."""
    text = orjson.dumps(labels)
    if b"\\u0000" in text:
        labels = {k: v for k, v in labels.items() if "\x00" not in k and "\x00" not in v}
        text = orjson.dumps(labels)
    return labels, text.decode()


def _same(stored: _Stored, ref: ObjectRef) -> bool:
    """A snapshot item that replaces the stored row changes nothing only if it is that row."""
    return (
        not stored.deleted
        and stored.resource_version == ref.resource_version
        and stored.uid == ref.uid
    )


def _created(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    value = meta.get("creationTimestamp") if isinstance(meta, dict) else None
    return value if isinstance(value, str) and len(value) < 64 and "\x00" not in value else ""


class _Batch:
    """The state of one transaction: what is stored, what is pending, what changed."""

    def __init__(
        self,
        conn: AsyncConnection,
        driver: Driver,
        sql: Statements,
        base_revision: int,
        now: float,
    ) -> None:
        self.conn = conn
        self.driver = driver
        self.sql = sql
        self.revision = base_revision
        self.now = now
        self.stored: dict[ResourceKey, _Stored | None] = {}
        self.rows: dict[ResourceKey, tuple[Any, ...]] = {}
        self.change_rows: list[tuple[Any, ...]] = []
        self.cluster_rows: dict[str, dict[str, Any]] = {}
        self.cluster_online: dict[str, bool] = {}
        self.seen_only: dict[str, bool] = {}
        """Clusters of the batch with nothing but heartbeats, and whether they were online:
        a heartbeat updates two columns, so their rows are neither read nor rewritten whole
        (10,000 clusters send 2,000 a second)."""
        self.seen_at: set[str] = set()
        self.digests: list[CheckDigest] = []
        self.digest_clusters: set[str] = set()
        self.result = Applied()

    # -- reads -------------------------------------------------------------------------

    async def prefetch(self, keys: Iterable[ResourceKey]) -> None:
        todo = [k for k in dict.fromkeys(keys) if k not in self.stored]
        for i in range(0, len(todo), _PREFETCH_CHUNK):
            chunk = todo[i : i + _PREFETCH_CHUNK]
            params: list[str] = []
            for key in chunk:
                self.stored[key] = None
                params += (key.cluster, key.api_version, key.kind, key.namespace, key.name)
            for row in await self.driver.rows(self.sql.stored_keys(len(chunk)), params):
                key = ResourceKey(row[0], row[1], row[2], row[3], row[4])
                self.stored[key] = _Stored(row[5], bool(row[6]), row[7], row[8])

    async def prefetch_clusters(self, names: Iterable[str], seen_only: Iterable[str] = ()) -> None:
        """Read the rows of the clusters in `names`; of those in `seen_only` (heartbeats
        alone) only whether they exist and are online."""
        todo = [n for n in set(names) if n not in self.cluster_rows]
        if todo:
            rows = await self.conn.execute(select(clusters).where(clusters.c.name.in_(todo)))
            for row in rows:
                self.cluster_rows[row.name] = dict(row._mapping)
                self.cluster_online[row.name] = row.online
        light = sorted(set(seen_only) - set(todo) - self.cluster_rows.keys())
        for i in range(0, len(light), _PREFETCH_CHUNK):
            chunk = light[i : i + _PREFETCH_CHUNK]
            for name, online in await self.driver.rows(self.sql.online_of(len(chunk)), chunk):
                self.seen_only[name] = bool(online)

    # -- object deltas -----------------------------------------------------------------

    def _record(
        self,
        key: ResourceKey,
        type_: EventType,
        body: dict[str, Any],
        body_json: str,
        prev_labels: dict[str, str] | None = None,
    ) -> int:
        self.revision += 1
        self.change_rows.append(
            (
                self.revision,
                key.cluster,
                key.api_version,
                key.kind,
                key.namespace,
                key.name,
                str(type_),
                body_json,
                self.now,
                None if prev_labels is None else orjson.dumps(prev_labels).decode(),
            )
        )
        self.result.changes.append(
            ChangeRecord(
                self.revision,
                key.cluster,
                str(type_),
                key.api_version,
                key.kind,
                key.namespace,
                key.name,
                body,
                prev_labels,
            )
        )
        return self.revision

    def _row(
        self,
        key: ResourceKey,
        uid: str,
        rv: int,
        revision: int,
        deleted: bool,
        labels_json: str,
        body_json: str,
        created: str,
    ) -> None:
        self.stored[key] = _Stored(rv, deleted, uid, labels_json)
        self.rows[key] = (
            key.cluster,
            key.api_version,
            key.kind,
            key.namespace,
            key.name,
            uid,
            rv,
            revision,
            deleted,
            labels_json,
            body_json,
            created,
            self.now,
        )

    def upsert(self, delta: Upsert) -> None:
        event, ref = delta.event, delta.event.ref
        key = ref.key(delta.cluster)
        stored = self.stored.get(key)
        if stored is not None and (
            _same(stored, ref) if delta.replace else ref.resource_version <= stored.resource_version
        ):
            self.result.skipped += 1
            return
        deleting = event.type is EventType.DELETED
        if deleting and (stored is None or stored.deleted):
            change_type = None  # a tombstone only: nothing the clients saw goes away
        elif deleting:
            change_type = EventType.DELETED
        elif stored is None or stored.deleted:
            change_type = EventType.ADDED
        else:
            change_type = EventType.MODIFIED
        body_json = (event.json or orjson.dumps(event.object)).decode()
        labels, labels_json = selectable_labels(ref.labels)
        prev_labels = None
        if change_type is EventType.MODIFIED and stored is not None and stored.labels is not None:
            before = orjson.loads(stored.labels)
            prev_labels = before if before != labels else None
        revision = self.revision
        if change_type:
            revision = self._record(key, change_type, event.object, body_json, prev_labels)
        self._row(
            key,
            ref.uid,
            ref.resource_version,
            revision,
            deleting,
            labels_json,
            body_json,
            _created(event.object),
        )

    async def sweep(self, delta: Sweep) -> None:
        await self.flush()
        of_kind = [
            resources.c.cluster == delta.cluster,
            resources.c.api_version == delta.kind.api_version,
            resources.c.kind == delta.kind.kind,
            resources.c.deleted.is_(False),
        ]
        if not delta.replace:
            of_kind.append(resources.c.resource_version <= delta.resource_version)
        # Names first: a snapshot usually deletes nothing, so bodies are read only for the
        # few objects that go.
        names = await self.conn.execute(
            select(resources.c.namespace, resources.c.name).where(*of_kind)
        )
        gone = {(ns, name) for ns, name in names if (ns, name) not in delta.seen}
        gone_names = sorted({name for _, name in gone})
        for i in range(0, len(gone_names), _PREFETCH_CHUNK):
            rows = await self.conn.execute(
                select(
                    resources.c.namespace,
                    resources.c.name,
                    resources.c.uid,
                    resources.c.labels,
                    type_coerce(resources.c.body, Text),
                    resources.c.created,
                    resources.c.resource_version,
                ).where(*of_kind, resources.c.name.in_(gone_names[i : i + _PREFETCH_CHUNK]))
            )
            for ns, name, uid, labels, body_json, created, stored_rv in rows:
                if (ns, name) not in gone:
                    continue
                key = ResourceKey(delta.cluster, delta.kind.api_version, delta.kind.kind, ns, name)
                revision = self._record(key, EventType.DELETED, orjson.loads(body_json), body_json)
                labels_json = orjson.dumps(labels).decode()
                rv = max(stored_rv, delta.resource_version)
                if delta.replace:
                    rv = delta.resource_version  # another history's versions mean nothing
                self._row(key, uid, rv, revision, True, labels_json, body_json, created)

    def check_digest(self, delta: CheckDigest) -> None:
        """Compared in `check_digests`, with the batch's other digests, before anything
        later of the same cluster is applied (so against exactly what preceded it)."""
        self.digests.append(delta)
        self.digest_clusters.add(delta.cluster)

    async def check_digests(self) -> None:
        """The digests waiting, against the stored rows: one statement for all of their
        clusters (10,000 clusters send 300 digests a second; a query per kind each was
        most of the hub's work at steady state)."""
        if not self.digests:
            return
        await self.flush()
        names = sorted(self.digest_clusters)
        live: dict[tuple[str, str, str], list[tuple[str, int]]] = {}
        for i in range(0, len(names), _PREFETCH_CHUNK):
            chunk = names[i : i + _PREFETCH_CHUNK]
            rows = await self.driver.rows(self.sql.live_versions_of(len(chunk)), chunk)
            for cluster, api_version, kind, uid, rv in rows:
                live.setdefault((cluster, api_version, kind), []).append((uid, rv))
        for delta in self.digests:
            for kind, theirs in delta.digests.items():
                ours = kind_digest(live.get((delta.cluster, kind.api_version, kind.kind), ()))
                if ours != theirs:
                    self.result.resync.setdefault(delta.cluster, set()).add(kind)
        self.digests.clear()
        self.digest_clusters.clear()

    # -- cluster deltas ----------------------------------------------------------------

    def _cluster(self, name: str) -> dict[str, Any]:
        row = self.cluster_rows.get(name)
        if row is None:
            row = {
                "name": name,
                "labels": {},
                "kinds": [],
                "online": False,
                "last_seen": 0.0,
                "first_seen": self.now,
                "heartbeat_s": 10.0,
                "agent_version": "",
            }
            self.cluster_rows[name] = row
        row["_dirty"] = True
        return row

    async def hello(self, delta: ClusterHello) -> None:
        """Upsert the cluster; objects of kinds its previous hello announced and this one
        does not are deleted (the agent no longer watches them: nothing would update them)."""
        self.result.labels[delta.cluster] = dict(delta.labels)
        before = self.cluster_rows.get(delta.cluster, {}).get("kinds") or []
        dropped = set(before) - {str(k) for k in delta.kinds}
        for kind in sorted(dropped):
            await self.sweep(Sweep(delta.cluster, KindKey.parse(kind), frozenset(), 0, True))
        self._cluster(delta.cluster).update(
            labels=delta.labels,
            kinds=[str(k) for k in delta.kinds],
            online=True,
            last_seen=self.now,
            heartbeat_s=delta.heartbeat_s,
            agent_version=delta.agent_version,
        )

    def seen(self, delta: ClusterSeen) -> None:
        if delta.cluster in self.seen_only:
            self.seen_at.add(delta.cluster)
            return
        if delta.cluster not in self.cluster_rows:
            # never said hello here (the hub's database was reset?): ask for everything
            self.result.resync[delta.cluster] = set()
        self._cluster(delta.cluster).update(online=True, last_seen=self.now)

    def offline(self, delta: ClusterOffline) -> None:
        self._cluster(delta.cluster).update(online=False)

    # -- writes ------------------------------------------------------------------------

    async def flush(self) -> None:
        if self.rows:
            await self.driver.many(self.sql.upsert_resource, list(self.rows.values()))
            self.rows.clear()
        if self.change_rows:
            await self.driver.many(self.sql.insert_change, self.change_rows)
            self.change_rows.clear()

    async def flush_clusters(self) -> None:
        """One executemany for every cluster touched (heartbeats touch many)."""
        rows = []
        for name, row in self.cluster_rows.items():
            if not row.pop("_dirty", False):
                continue
            rows.append(
                (
                    name,
                    orjson.dumps(row["labels"]).decode(),
                    orjson.dumps(row["kinds"]).decode(),
                    row["online"],
                    row["last_seen"],
                    row["first_seen"],
                    row["heartbeat_s"],
                    row["agent_version"],
                )
            )
            if self.cluster_online.get(name) != row["online"]:
                self.result.clusters.append(ClusterStatus(name, row["online"], row["last_seen"]))
        if rows:
            await self.driver.many(self.sql.upsert_cluster, rows)
        if self.seen_at:
            await self.driver.many(
                self.sql.mark_seen, [(self.now, name) for name in sorted(self.seen_at)]
            )
            for name in sorted(self.seen_at):
                if not self.seen_only[name]:
                    self.result.clusters.append(ClusterStatus(name, True, self.now))


class InventoryWriter:
    """Applies batches of deltas; see the module docstring for the guarantees."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.lock = asyncio.Lock()
        """Held for every write transaction of this process (upkeep takes it too)."""
        self._engine = engine
        self._clock = clock
        self._statements = Statements.for_dialect(engine.dialect.name)

    async def apply(
        self, deltas: Sequence[Delta], refused: Sequence[RejectionRecord] = ()
    ) -> Applied:
        """Apply `deltas` in one transaction, with dead-letter records of refused messages.

        Raises what the database raises; `app.store.errors.is_data_error` tells a batch that
        can never be stored (isolate its culprit) from an outage (retry it whole)."""
        async with self.lock, self._engine.begin() as conn:
            # Lock the counter row first: writers serialize here, so revisions commit in order.
            # Statements go straight to the driver (`app.store.driver`): a batch of one change
            # is mostly round trips.
            driver = await driver_for(conn)
            [(base,)] = await driver.rows(self._statements.lock_counter)
            batch = _Batch(conn, driver, self._statements, base, self._clock())
            await batch.prefetch(
                d.event.ref.key(d.cluster) for d in deltas if isinstance(d, Upsert)
            )
            lifecycle = {d.cluster for d in deltas if isinstance(d, ClusterHello | ClusterOffline)}
            await batch.prefetch_clusters(
                lifecycle,
                {d.cluster for d in deltas if isinstance(d, ClusterSeen)} - lifecycle,
            )
            for delta in deltas:
                if (
                    isinstance(delta, Upsert | Sweep | ClusterHello)
                    and delta.cluster in batch.digest_clusters
                ):
                    await batch.check_digests()  # a digest describes what preceded it
                match delta:
                    case Upsert():
                        batch.upsert(delta)
                    case Sweep():
                        await batch.sweep(delta)
                    case CheckDigest():
                        batch.check_digest(delta)
                    case ClusterHello():
                        await batch.hello(delta)
                    case ClusterSeen():
                        batch.seen(delta)
                    case ClusterOffline():
                        batch.offline(delta)
            await batch.check_digests()
            await batch.flush()
            await batch.flush_clusters()
            if refused:
                await conn.execute(insert(rejections), [r.row() for r in refused])
            if batch.revision != base:
                await driver.rows(self._statements.set_counter, (batch.revision,))
        return batch.result
