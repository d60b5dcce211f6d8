"""The cluster registry in SQL: registrations, one-time join tokens, issued certificates,
removals.

Written by the CLI (`clusters add/remove`), the dashboard's admin routes, and the hub (join,
renewal, auto-registration); read by every hub, which keeps the registered names in memory
(`app/hub/registrations.py`) and re-reads them every few seconds.

Token checks and certificate issue happen in one transaction: a token is used only if the
certificate it pays for is recorded, and two joins racing with one token cannot both win
(the conditional UPDATE marks it used; rowcount says who did).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.informer.objects import KindKey
from app.store.tables import (
    cluster_certificates,
    cluster_registrations,
    cluster_removals,
    clusters,
    deliveries,
    resources,
)


class AlreadyRegistered(Exception):
    pass


class NotRegistered(Exception):
    pass


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    serial: str
    issued_at: float
    not_after: float


@dataclass(frozen=True, slots=True)
class Registration:
    name: str
    labels: dict[str, str]
    registered_at: float
    auto: bool
    token_expires_at: float
    token_used_at: float | None
    has_token: bool
    certificate: IssuedCertificate | None
    """The newest unrevoked certificate, if any."""


class TokenVerdict(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Removal:
    id: int
    cluster: str
    requested_at: float
    keep_inventory: bool


Issue = Callable[[], IssuedCertificate]
"""Signs the certificate (called inside the transaction, after the checks passed)."""


async def register(
    engine: AsyncEngine,
    name: str,
    labels: dict[str, str],
    *,
    token_hash: str | None,
    token_expires_at: float,
    now: float,
) -> None:
    """A new registration; AlreadyRegistered if the name is taken."""
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(cluster_registrations).values(
                    name=name,
                    labels=labels,
                    registered_at=now,
                    auto=False,
                    token_hash=token_hash,
                    token_expires_at=token_expires_at,
                    token_used_at=None,
                )
            )
    except IntegrityError:
        raise AlreadyRegistered(name) from None


async def register_seen(
    engine: AsyncEngine,
    seen: dict[str, dict[str, str]],
    now: float,
    lock: asyncio.Lock | None = None,
) -> None:
    """Auto-registration on first hellos (name -> its labels), all in one transaction;
    names registered already are left as they are. A connect storm of 10,000 new clusters
    is a few transactions, not 10,000 racing the ingest writer for SQLite's lock."""
    names = sorted(seen)
    async with lock or nullcontext(), engine.begin() as conn:
        known: set[str] = set()
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            rows = await conn.execute(
                select(cluster_registrations.c.name).where(cluster_registrations.c.name.in_(chunk))
            )
            known.update(name for (name,) in rows)
        new = [
            {
                "name": name,
                "labels": seen[name],
                "registered_at": now,
                "auto": True,
                "token_hash": None,
                "token_expires_at": 0.0,
                "token_used_at": None,
            }
            for name in names
            if name not in known
        ]
        if new:
            await conn.execute(insert(cluster_registrations), new)


async def new_token(
    engine: AsyncEngine,
    name: str,
    *,
    token_hash: str,
    token_expires_at: float,
    labels: dict[str, str] | None = None,
) -> None:
    """Replace a registration's join token (and its labels, if given); NotRegistered."""
    values: dict[str, Any] = {
        "token_hash": token_hash,
        "token_expires_at": token_expires_at,
        "token_used_at": None,
    }
    if labels is not None:
        values["labels"] = labels
    async with engine.begin() as conn:
        result = await conn.execute(
            update(cluster_registrations)
            .where(cluster_registrations.c.name == name)
            .values(**values)
        )
    if result.rowcount != 1:
        raise NotRegistered(name)


async def registered(engine: AsyncEngine) -> dict[str, dict[str, str]]:
    """Every registered cluster's labels, by name."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(cluster_registrations.c.name, cluster_registrations.c.labels)
        )
        return {row.name: dict(row.labels or {}) for row in rows}


async def list_registrations(engine: AsyncEngine, now: float) -> list[Registration]:
    async with engine.connect() as conn:
        regs = (
            await conn.execute(select(cluster_registrations).order_by(cluster_registrations.c.name))
        ).all()
        certs = (
            await conn.execute(
                select(cluster_certificates)
                .where(cluster_certificates.c.revoked_at.is_(None))
                .where(cluster_certificates.c.not_after > now)
                .order_by(cluster_certificates.c.issued_at)
            )
        ).all()
    newest = {
        c.cluster: IssuedCertificate(c.serial, c.issued_at, c.not_after) for c in certs
    }  # ordered by issue time: the last one wins
    return [
        Registration(
            name=r.name,
            labels=dict(r.labels or {}),
            registered_at=r.registered_at,
            auto=r.auto,
            token_expires_at=r.token_expires_at,
            token_used_at=r.token_used_at,
            has_token=r.token_hash is not None,
            certificate=newest.get(r.name),
        )
        for r in regs
    ]


async def _record(conn: AsyncConnection, cluster: str, issued: IssuedCertificate) -> None:
    await conn.execute(
        insert(cluster_certificates).values(
            serial=issued.serial,
            cluster=cluster,
            issued_at=issued.issued_at,
            not_after=issued.not_after,
            revoked_at=None,
        )
    )


async def join(
    engine: AsyncEngine, name: str, token_hash: str, now: float, issue: Issue
) -> tuple[TokenVerdict, IssuedCertificate | None]:
    """Use the token of registration `name` and record the certificate `issue` makes.
    A wrong token for a name that is not registered is just WRONG: nothing tells an
    unauthenticated caller which names exist."""
    async with engine.begin() as conn:
        result = await conn.execute(
            update(cluster_registrations)
            .where(
                and_(
                    cluster_registrations.c.name == name,
                    cluster_registrations.c.token_hash == token_hash,
                    cluster_registrations.c.token_used_at.is_(None),
                    cluster_registrations.c.token_expires_at > now,
                )
            )
            .values(token_used_at=now)
        )
        if result.rowcount == 1:
            issued = issue()
            await _record(conn, name, issued)
            return TokenVerdict.ACCEPTED, issued
        row = (
            await conn.execute(
                select(cluster_registrations).where(
                    and_(
                        cluster_registrations.c.name == name,
                        cluster_registrations.c.token_hash == token_hash,
                    )
                )
            )
        ).first()
    if row is None:
        return TokenVerdict.WRONG, None
    if row.token_used_at is not None:
        return TokenVerdict.USED, None
    return TokenVerdict.EXPIRED, None


async def renew(
    engine: AsyncEngine, name: str, serial: str, now: float, issue: Issue
) -> IssuedCertificate | None:
    """A new certificate for a registered cluster presenting one of its own unrevoked,
    unexpired certificates (`serial`); None if it may not."""
    async with engine.begin() as conn:
        current = (
            await conn.execute(
                select(cluster_certificates.c.serial)
                .select_from(
                    cluster_certificates.join(
                        cluster_registrations,
                        cluster_registrations.c.name == cluster_certificates.c.cluster,
                    )
                )
                .where(
                    and_(
                        cluster_certificates.c.serial == serial,
                        cluster_certificates.c.cluster == name,
                        cluster_certificates.c.revoked_at.is_(None),
                        cluster_certificates.c.not_after > now,
                    )
                )
            )
        ).first()
        if current is None:
            return None
        issued = issue()
        await _record(conn, name, issued)
        return issued


async def request_removal(
    engine: AsyncEngine, name: str, *, keep_inventory: bool, now: float
) -> bool:
    """Unregister `name`, revoke its certificates and queue the rest of the removal for the
    hub; False if it was not registered."""
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(cluster_registrations).where(cluster_registrations.c.name == name)
        )
        if result.rowcount != 1:
            return False
        await conn.execute(
            update(cluster_certificates)
            .where(cluster_certificates.c.cluster == name)
            .where(cluster_certificates.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await conn.execute(
            insert(cluster_removals).values(
                cluster=name, requested_at=now, keep_inventory=keep_inventory, done_at=None
            )
        )
    return True


async def pending_removals(engine: AsyncEngine) -> list[Removal]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(cluster_removals)
            .where(cluster_removals.c.done_at.is_(None))
            .order_by(cluster_removals.c.id)
        )
        return [Removal(r.id, r.cluster, r.requested_at, r.keep_inventory) for r in rows]


async def finish_removal(engine: AsyncEngine, removal_id: int, now: float) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(cluster_removals).where(cluster_removals.c.id == removal_id).values(done_at=now)
        )


async def revoked(engine: AsyncEngine, now: float) -> list[tuple[str, float]]:
    """(serial, revoked_at) of every revoked certificate not yet expired: the CRL's
    content. An expired certificate is refused anyway and leaves the list."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(cluster_certificates.c.serial, cluster_certificates.c.revoked_at)
            .where(cluster_certificates.c.revoked_at.is_not(None))
            .where(cluster_certificates.c.not_after > now)
            .order_by(cluster_certificates.c.serial)
        )
        return [(r.serial, float(r.revoked_at)) for r in rows]


async def forget_expired(engine: AsyncEngine, now: float, keep_removals_s: float) -> None:
    """Drop certificates past their end and finished removals older than `keep_removals_s`."""
    async with engine.begin() as conn:
        await conn.execute(
            delete(cluster_certificates).where(cluster_certificates.c.not_after <= now)
        )
        await conn.execute(
            delete(cluster_removals)
            .where(cluster_removals.c.done_at.is_not(None))
            .where(cluster_removals.c.done_at < now - keep_removals_s)
        )


async def record_revoked(
    engine: AsyncEngine, serial: str, cluster: str, not_after: float, now: float
) -> None:
    """A certificate revoked from the start (the hub's CRL canaries)."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(cluster_certificates).values(
                serial=serial, cluster=cluster, issued_at=now, not_after=not_after, revoked_at=now
            )
        )


async def inventory_kinds(engine: AsyncEngine, cluster: str) -> list[KindKey]:
    """The kinds of which `cluster` has live objects stored."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(resources.c.api_version, resources.c.kind)
            .where(resources.c.cluster == cluster)
            .where(resources.c.deleted.is_(False))
            .distinct()
        )
        return [KindKey(r.api_version, r.kind) for r in rows]


async def forget_cluster(engine: AsyncEngine, cluster: str, lock: asyncio.Lock | None) -> None:
    """Drop a removed cluster's row and its workload deliveries (its objects are deleted
    before, through the writer, so that their deletions reach the change log)."""
    async with lock or nullcontext(), engine.begin() as conn:
        await conn.execute(delete(deliveries).where(deliveries.c.cluster == cluster))
        await conn.execute(delete(clusters).where(clusters.c.name == cluster))
