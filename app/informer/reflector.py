"""The hub-side reflector of one cluster: agent traffic in, ordered deltas out.

Like client-go's Reflector, it gives listings replace semantics and passes watch events
through; unlike it, it keeps no object cache (the store is the cache). What it keeps per
kind is the snapshot being received: its id, the next chunk expected and the keys seen so
far (names only, bounded by `max_snapshot_objects`).

A snapshot flagged `replace` is the cluster's truth as of its resourceVersion (the agent
lists with consistent reads and holds back newer watch events of the kind until the listing
is queued): its items replace what is stored whatever the stored resourceVersion, except
objects a watch event touched while it was open, and its sweep deletes everything it lacks.
So the store converges to a cluster whose resourceVersions went backwards (re-created under
the same name, restored from an etcd backup) and drops versions nobody lists (forged). An
unflagged snapshot merges by resourceVersion, as protocol v1 first defined.

A snapshot missing a chunk (a gap in the numbering, a chunk of an unknown snapshot, or one
too large to track) is abandoned and its kind relisted: only a snapshot received whole may
delete what it does not contain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from app.informer.deltas import CheckDigest, Delta, Sweep, Upsert
from app.informer.digest import KindDigest
from app.informer.objects import EventType, KindKey, WatchEvent

log = logging.getLogger(__name__)


@dataclass
class _OpenSnapshot:
    snapshot_id: str
    replace: bool = False
    next_chunk: int = 0
    seen: set[tuple[str, str]] = field(default_factory=set)
    watched: set[tuple[str, str]] = field(default_factory=set)
    """Objects a watch event (deletes included) touched while the snapshot was open: their
    items do not replace what the event stored."""


@dataclass
class Reflection:
    """Deltas to apply, and kinds the agent must relist."""

    deltas: list[Delta] = field(default_factory=list)
    relist: set[KindKey] = field(default_factory=set)


class Reflector:
    def __init__(self, cluster: str, *, max_snapshot_objects: int = 1_000_000) -> None:
        self.cluster = cluster
        self.max_snapshot_objects = max_snapshot_objects
        self._open: dict[KindKey, _OpenSnapshot] = {}
        self._closed: dict[KindKey, str] = {}
        """Per kind, the last snapshot finished, abandoned or given up: its late or
        redelivered chunks only re-apply their items (idempotent), nothing more."""

    @property
    def receiving(self) -> bool:
        """A snapshot of some kind is open: the cluster is being listed."""
        return bool(self._open)

    def watch(self, events: Sequence[WatchEvent]) -> Reflection:
        for event in events:
            snapshot = self._open.get(KindKey(event.ref.api_version, event.ref.kind))
            if snapshot is not None:
                name = (event.ref.namespace, event.ref.name)
                snapshot.watched.add(name)
                if event.type is not EventType.DELETED:
                    snapshot.seen.add(name)
        return Reflection([Upsert(self.cluster, e) for e in events])

    def snapshot_chunk(
        self,
        *,
        snapshot_id: str,
        kind: KindKey,
        chunk: int,
        last: bool,
        resource_version: int,
        items: Sequence[WatchEvent],
        replace: bool = False,
    ) -> Reflection:
        """Items are applied as they come. Chunk 0 opens a snapshot (superseding one still
        open); a chunk already received (a redelivery) changes nothing else; a gap, or a
        chunk of a snapshot never seen opening (a hub restart cut it), abandons the kind's
        snapshot and asks for one relist; the rest of that snapshot is then only applied."""
        out = Reflection([Upsert(self.cluster, e) for e in items])
        snapshot = self._open.get(kind)
        if snapshot is not None and snapshot.snapshot_id == snapshot_id:
            if chunk < snapshot.next_chunk:
                return out  # a duplicate
        elif self._closed.get(kind) == snapshot_id:
            return out  # a late chunk of a snapshot already finished or given up
        if chunk == 0:
            snapshot = self._open[kind] = _OpenSnapshot(snapshot_id, replace)
        elif (
            snapshot is None or snapshot.snapshot_id != snapshot_id or snapshot.next_chunk != chunk
        ):
            log.warning(
                "cluster %s: snapshot %s of %s is missing chunks (got chunk %d); relisting",
                self.cluster,
                snapshot_id,
                kind,
                chunk,
            )
            self._close(kind, snapshot_id)
            out.relist.add(kind)
            return out
        snapshot.next_chunk += 1
        snapshot.seen.update((e.ref.namespace, e.ref.name) for e in items)
        if snapshot.replace:
            out.deltas = [
                Upsert(self.cluster, e, (e.ref.namespace, e.ref.name) not in snapshot.watched)
                for e in items
            ]
        if len(snapshot.seen) > self.max_snapshot_objects:
            log.warning("cluster %s: snapshot of %s too large to sweep", self.cluster, kind)
            self._close(kind, snapshot_id)
            return out
        if last:
            self._close(kind, snapshot_id)
            seen = frozenset(snapshot.seen)
            out.deltas.append(Sweep(self.cluster, kind, seen, resource_version, snapshot.replace))
        return out

    def _close(self, kind: KindKey, snapshot_id: str) -> None:
        self._open.pop(kind, None)
        self._closed[kind] = snapshot_id

    def abandon(self, kinds: Iterable[KindKey]) -> None:
        """Give up the open snapshots of `kinds` (part of one could not be stored): they
        must not sweep. The caller asks for a relist."""
        for kind in kinds:
            snapshot = self._open.get(kind)
            if snapshot is not None:
                self._close(kind, snapshot.snapshot_id)

    def unsee(self, kind: KindKey, name: tuple[str, str]) -> None:
        """An item of the open snapshot could not be stored: its sweep must treat it as
        absent (and delete the version stored before)."""
        snapshot = self._open.get(kind)
        if snapshot is not None:
            snapshot.seen.discard(name)

    def digest(self, digests: dict[KindKey, KindDigest]) -> Reflection:
        """Kinds with a snapshot under way are skipped: the snapshot will settle them."""
        settled = {k: d for k, d in digests.items() if k not in self._open}
        return Reflection([CheckDigest(self.cluster, settled)] if settled else [])
