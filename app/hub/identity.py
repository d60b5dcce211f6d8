"""Cluster identity on one hub: registrations, joining and renewal, and removals carried
through to the end.

A removal (`clusters remove`, `DELETE /clusters/{cluster}`) is recorded in the database first
(`cluster_admin.remove_cluster`: unregistered, certificates revoked). Each hub then, within
`registry_refresh_s` (at once for its own HTTP removals):

1. stops admitting the cluster, and refuses the messages it has queued (`unregistered`);
2. between two ingest batches, deletes its inventory (tombstones and DELETED changes, so
   SSE clients see it go) and forgets its row and deliveries, or with `keep_inventory`
   only marks it offline;
3. has the broker take up the new CRL and checks it did (`BrokerRevocation.publish`), then
   ends the cluster's connection and session (`evict`);
4. marks the removal done.

Without PKI (insecure mode) there is no broker step: any client may act as any cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import HubSettings
from app.hub.cluster_admin import remove_cluster
from app.hub.enrolment import Enrolment
from app.hub.feed import ChangeFeed
from app.hub.hub_pki import HubPki
from app.hub.ingest import Ingest
from app.hub.registrations import Registrations
from app.hub.revocation import BrokerRevocation
from app.informer.deltas import ClusterOffline, Delta, Sweep
from app.store import registrations as store
from app.store.writer import InventoryWriter

log = logging.getLogger(__name__)

CRL_REFRESH_S = 24 * 3600.0
KEEP_REMOVALS_S = 30 * 24 * 3600.0


class ClusterIdentity:
    def __init__(
        self,
        settings: HubSettings,
        *,
        engine: AsyncEngine,
        writer: InventoryWriter,
        feed: ChangeFeed,
        pki: HubPki | None,
    ) -> None:
        self.settings = settings
        self.pki = pki
        self._engine = engine
        self._writer = writer
        self._feed = feed
        self.registrations = Registrations(
            engine,
            accept_any=settings.accept_any_cluster or pki is None,
            refresh_s=settings.registry_refresh_s,
            lock=writer.lock,
        )
        self.enrolment: Enrolment | None = None
        self.revocation: BrokerRevocation | None = None
        if pki is not None:
            self.enrolment = Enrolment(
                engine=engine,
                authority=pki.authority(),
                ca_bundle=pki.ca_bundle(),
                broker_url=settings.agent_broker_url or settings.broker_url,
                lifetime_s=settings.cert_lifetime_s,
                registrations=self.registrations,
            )
            self.revocation = BrokerRevocation(
                engine=engine,
                authority=pki.authority(),
                crl_file=pki.crl_file,
                pid_file=_path(settings.broker_pid_file),
                broker_url=settings.broker_url,
                ca_file=pki.ca_file,
            )
        self._ingest: Ingest | None = None
        self._carrying_out = asyncio.Lock()
        """One pass over the pending removals at a time; a caller that waited for it finds
        its removal done."""
        self.removed_at: dict[str, float] = {}
        """When each removal was finished here (monotonic), for tests and logs."""

    @property
    def secure(self) -> bool:
        return self.pki is not None

    def warn_if_open(self) -> None:
        if self.pki is None:
            log.warning(
                "INSECURE MODE: no PKI (TI_PKI_DIR / TI_CERT_FILE): plain MQTT and HTTP, and "
                "any client that reaches the broker can act as any cluster. For development "
                "and benchmarks only; see docs/security.md"
            )
        elif self.settings.accept_any_cluster:
            log.warning(
                "--accept-any-cluster: clusters are registered by their first hello, "
                "without an admin (development and benchmarks only)"
            )

    async def start(self, ingest: Ingest) -> None:
        self._ingest = ingest
        await self.registrations.load()

    async def run(self) -> None:
        """Until cancelled: re-read registrations when asked, carry out removals, keep the
        broker's CRL fresh."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.registrations.refresh_when_asked())
            tasks.create_task(self._removals())
            if self.revocation is not None:
                tasks.create_task(self._crl_refresh(self.revocation))

    async def close(self) -> None:
        await self.registrations.close()

    async def remove(self, name: str, *, keep_inventory: bool) -> bool:
        """Remove a cluster and carry the removal out here at once; False if unknown."""
        if not await remove_cluster(self._engine, name, keep_inventory=keep_inventory):
            return False
        self.registrations.removed(name)
        await self._carry_out()
        return True

    async def _removals(self) -> None:
        while True:
            try:
                await self._carry_out()
            except Exception:
                log.exception("carrying out cluster removals failed; trying again")
            await asyncio.sleep(self.settings.registry_refresh_s)

    async def _carry_out(self) -> None:
        async with self._carrying_out:
            for removal in await store.pending_removals(self._engine):
                await self._carry_out_one(removal)

    async def _carry_out_one(self, removal: store.Removal) -> None:
        name = removal.cluster
        started = time.monotonic()
        self.registrations.removed(name)
        refused = 0
        if self._ingest is not None:
            refused = self._ingest.forget(name)
            await self._ingest.exclusive(lambda: self._drop_inventory(name, removal.keep_inventory))
        enforced = None
        if self.revocation is not None:
            enforced = await self.revocation.publish()
            await self.revocation.evict(name)
        await store.finish_removal(self._engine, removal.id, time.time())
        self.removed_at[name] = time.monotonic()
        log.warning(
            "cluster %s removed in %.2f s: %d queued messages refused, inventory %s%s",
            name,
            time.monotonic() - started,
            refused,
            "kept" if removal.keep_inventory else "deleted",
            ""
            if enforced is None
            else (
                ", certificates revoked at the broker and its connection closed"
                if enforced
                else ", but the broker did not take up the CRL (see the error above)"
            ),
        )

    async def _drop_inventory(self, name: str, keep: bool) -> None:
        if name in self.registrations.names:
            return  # registered again meanwhile: the new agent's listing replaces it
        deltas: list[Delta] = [ClusterOffline(name, "removed")]
        if not keep:
            deltas = [
                Sweep(name, kind, frozenset(), 0, replace=True)
                for kind in await store.inventory_kinds(self._engine, name)
            ]
        applied = await self._writer.apply(deltas)
        self._feed.publish([*applied.changes, *applied.clusters])
        if not keep:
            await store.forget_cluster(self._engine, name, self._writer.lock)

    async def _crl_refresh(self, revocation: BrokerRevocation) -> None:
        """A CRL past its next-update makes OpenSSL refuse every client: rewrite it daily
        (and at start), and forget certificates that have expired."""
        while True:
            try:
                await revocation.publish()
                await store.forget_expired(self._engine, time.time(), KEEP_REMOVALS_S)
            except Exception:
                log.exception("refreshing the CRL failed; trying again in a minute")
                await asyncio.sleep(60)
                continue
            await asyncio.sleep(CRL_REFRESH_S)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None
