"""Which clusters the hub takes messages from: the registrations, held in memory.

Ingest asks `admits(cluster)` (a `RegistrationGate`) for every message, so the answer is
a dict lookup. The set is loaded at start and kept current three ways: this hub's own
joins, adds and removals update it at once; a message from a cluster it does not know
makes it re-read the table (at most every `refresh_s`), since `clusters add` may have been
run by the CLI or another hub; and the owner (`ClusterIdentity`) re-reads it every so
often to see removals and label changes made elsewhere.

With `accept_any` every cluster is admitted, and one that says hello without being
registered is registered then (with the labels it announced), as Open Cluster Management's
auto-approval does. Otherwise a registered cluster's labels are the admin's, not the
agent's: a compromised agent cannot relabel itself into another cluster's workloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from app.store import registrations as store

log = logging.getLogger(__name__)


class RegistrationGate(Protocol):
    """What ingest needs to know about registrations."""

    def admits(self, cluster: str) -> bool: ...

    def labels(self, cluster: str, announced: dict[str, str]) -> dict[str, str]:
        """The labels to store for a hello that announced `announced`."""
        ...

    def said_hello(self, cluster: str, labels: dict[str, str]) -> None: ...


class AdmitAll:
    """Every cluster, with the labels it announces: ingest without registrations."""

    def admits(self, cluster: str) -> bool:
        return True

    def labels(self, cluster: str, announced: dict[str, str]) -> dict[str, str]:
        return announced

    def said_hello(self, cluster: str, labels: dict[str, str]) -> None:
        pass


@dataclass(frozen=True, slots=True)
class _Entry:
    labels: dict[str, str]
    auto: bool


class Registrations:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        accept_any: bool,
        refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        lock: asyncio.Lock | None = None,
    ) -> None:
        """`lock`: the hub's write lock (the writer's), held while auto-registrations are
        stored, so they never collide with ingest inside SQLite."""
        self._engine = engine
        self._lock = lock
        self.accept_any = accept_any
        self._refresh_s = refresh_s
        self._clock = clock
        self._known: dict[str, _Entry] = {}
        self._removed: dict[str, float] = {}
        """Removed by this hub, and when: a read that started before must not bring them
        back."""
        self._last_read = -refresh_s
        self._wanted = asyncio.Event()
        self._registering: dict[str, dict[str, str]] = {}
        """Clusters registered by hello and not yet stored, with their labels."""
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._known)

    async def load(self) -> None:
        """Read every registration (at start; and by `refresh`)."""
        started = self._last_read = self._clock()
        rows = await store.list_registrations(self._engine, time.time())
        self._removed = {n: at for n, at in self._removed.items() if at >= started}
        self._known = {
            r.name: _Entry(r.labels, r.auto) for r in rows if r.name not in self._removed
        }

    # -- RegistrationGate -----------------------------------------------------------------------

    def admits(self, cluster: str) -> bool:
        if cluster in self._known or self.accept_any:
            return True
        self._wanted.set()  # perhaps registered elsewhere since the last read
        return False

    def labels(self, cluster: str, announced: dict[str, str]) -> dict[str, str]:
        entry = self._known.get(cluster)
        return entry.labels if entry is not None and not entry.auto else announced

    def said_hello(self, cluster: str, labels: dict[str, str]) -> None:
        if cluster in self._known or not self.accept_any or cluster in self._registering:
            return
        self._known[cluster] = _Entry(labels, auto=True)
        if not self._registering:  # one writer at a time takes every name waiting
            task = asyncio.ensure_future(self._register())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._registering[cluster] = labels

    async def _register(self) -> None:
        """Store the waiting auto-registrations in one transaction (those arriving
        meanwhile in the next); a failure forgets them, and their next hello retries."""
        await asyncio.sleep(0)  # let the rest of the storm's hellos join this transaction
        while self._registering:
            batch = dict(self._registering)
            log.warning(
                "%d clusters registered by their first hello (accept-any-cluster): %s",
                len(batch),
                ", ".join(sorted(batch)[:5]) + (", ..." if len(batch) > 5 else ""),
            )
            try:
                await store.register_seen(self._engine, batch, time.time(), self._lock)
            except Exception as exc:
                log.warning("could not record the registration of %d clusters: %s", len(batch), exc)
                for cluster in batch:
                    self._known.pop(cluster, None)
            finally:
                for cluster in batch:
                    self._registering.pop(cluster, None)

    # -- changes made here and elsewhere -------------------------------------------------

    def added(self, cluster: str, labels: dict[str, str]) -> None:
        self._removed.pop(cluster, None)
        self._known[cluster] = _Entry(labels, auto=False)

    def removed(self, cluster: str) -> None:
        self._known.pop(cluster, None)
        self._removed[cluster] = self._clock()

    async def refresh_when_asked(self) -> None:
        """Re-read the registrations whenever an unknown cluster was seen, at most every
        `refresh_s`; runs until cancelled."""
        while True:
            await self._wanted.wait()
            wait = self._last_read + self._refresh_s - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            self._wanted.clear()
            try:
                await self.load()
            except Exception as exc:
                log.warning("could not read the cluster registrations: %s", exc)
                await asyncio.sleep(self._refresh_s)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
