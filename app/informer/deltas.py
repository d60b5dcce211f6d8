"""What the informer asks its handler (the store) to do, in order, in one batch.

The handler applies a batch atomically and idempotently: an `Upsert` older than or equal to
what is stored for that key is a no-op, so duplicates and redeliveries are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.informer.digest import KindDigest
from app.informer.objects import KindKey, WatchEvent


@dataclass(frozen=True, slots=True)
class Upsert:
    """A watch event or a snapshot item (then of type ADDED)."""

    cluster: str
    event: WatchEvent
    replace: bool = False
    """An item of a replacing snapshot that no watch event touched during it: it replaces the
    stored version whatever its resourceVersion (the listing is the cluster's truth; a higher
    stored version is from a history the cluster no longer has: re-created, restored from an
    etcd backup, or forged)."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """End of a complete snapshot: delete the live objects of the kind it did not contain
    and no watch event created during it.

    A replacing snapshot deletes them whatever their stored resourceVersion, with tombstones
    at the listing's; otherwise only those stored at a resourceVersion <= the listing's go
    (anything newer came from a watch event after the listing), tombstoned at the higher of
    the two."""

    cluster: str
    kind: KindKey
    seen: frozenset[tuple[str, str]]
    """(namespace, name) of every object in the snapshot or watched (not deleted) during it."""
    resource_version: int
    replace: bool = False


@dataclass(frozen=True, slots=True)
class CheckDigest:
    """Compare the agent's per-kind digests with what is stored; differing kinds are relisted."""

    cluster: str
    digests: dict[KindKey, KindDigest]


@dataclass(frozen=True, slots=True)
class ClusterHello:
    cluster: str
    labels: dict[str, str]
    kinds: tuple[KindKey, ...]
    heartbeat_s: float
    agent_version: str


@dataclass(frozen=True, slots=True)
class ClusterSeen:
    cluster: str


@dataclass(frozen=True, slots=True)
class ClusterOffline:
    cluster: str
    reason: str


Delta = Upsert | Sweep | CheckDigest | ClusterHello | ClusterSeen | ClusterOffline
