"""Tokens, dashboard sessions, one-time sign-in tickets and hub keys, in SQL.

Secrets never reach the database: tokens, session ids and tickets are 256 random bits
handed out once, and only their SHA-256 is stored and looked up. Every lookup reads the
database, so a revoked token, an ended session or an expired one stops working at once,
on every replica. Writes take the writer's lock (`lock`) when the hub makes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.audit import AuditRecord, add_audit
from app.store.tables import api_tokens, hub_keys, sign_in_tickets, web_sessions

TOKEN_PREFIX = "ti_"
SESSION_PREFIX = "tis_"
TICKET_PREFIX = "tit_"


class TokenExists(ValueError):
    pass


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    name: str
    role: str
    clusters: str
    created_at: float
    expires_at: float | None
    created_by: str

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id_hash: str
    token_name: str
    principal: str
    role: str
    clusters: str
    expires_at: float


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        row.name, row.role, row.clusters, row.created_at, row.expires_at, row.created_by
    )


def _locked(lock: asyncio.Lock | None) -> Any:
    return lock or nullcontext()


async def create_token(
    engine: AsyncEngine,
    *,
    name: str,
    role: str,
    clusters: str,
    now: float,
    expires_at: float | None,
    created_by: str,
    audit: AuditRecord | None = None,
    lock: asyncio.Lock | None = None,
) -> str:
    """Store a new token and return it (the only time it is seen). TokenExists if the name
    is taken."""
    secret = new_secret(TOKEN_PREFIX)
    row = {
        "name": name,
        "token_hash": digest(secret),
        "role": role,
        "clusters": clusters,
        "created_at": now,
        "expires_at": expires_at,
        "created_by": created_by,
    }
    try:
        async with _locked(lock), engine.begin() as conn:
            await conn.execute(insert(api_tokens).values(**row))
            if audit is not None:
                await add_audit(conn, audit)
    except IntegrityError:
        raise TokenExists(f"a token named {name!r} exists; revoke it first") from None
    return secret


async def list_tokens(engine: AsyncEngine) -> list[TokenRecord]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(api_tokens).order_by(api_tokens.c.name))
        return [_token(r) for r in rows]


async def revoke_token(
    engine: AsyncEngine,
    name: str,
    *,
    audit: AuditRecord | None = None,
    lock: asyncio.Lock | None = None,
) -> bool:
    """Delete the token with its sessions and sign-in tickets; False if there was none."""
    async with _locked(lock), engine.begin() as conn:
        result = await conn.execute(delete(api_tokens).where(api_tokens.c.name == name))
        await conn.execute(delete(web_sessions).where(web_sessions.c.token_name == name))
        await conn.execute(delete(sign_in_tickets).where(sign_in_tickets.c.token_name == name))
        found = bool(result.rowcount)
        if found and audit is not None:
            await add_audit(conn, audit)
    return found


async def token_by_secret(engine: AsyncEngine, secret: str) -> TokenRecord | None:
    """The token whose secret this is (expired or not: the caller decides), or None."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest(secret)))
        ).first()
    return _token(row) if row is not None else None


# -- sessions -------------------------------------------------------------------------------


async def create_session(
    engine: AsyncEngine,
    *,
    token_name: str,
    principal: str,
    role: str,
    clusters: str,
    now: float,
    expires_at: float,
    source: str,
    audit: AuditRecord | None = None,
    lock: asyncio.Lock | None = None,
) -> str:
    """A new session; returns the cookie value."""
    secret = new_secret(SESSION_PREFIX)
    async with _locked(lock), engine.begin() as conn:
        await conn.execute(
            insert(web_sessions).values(
                id_hash=digest(secret),
                token_name=token_name,
                principal=principal,
                role=role,
                clusters=clusters,
                created_at=now,
                expires_at=expires_at,
                source=source[:253],
            )
        )
        if audit is not None:
            await add_audit(conn, audit)
    return secret


async def session_by_secret(engine: AsyncEngine, secret: str, now: float) -> SessionRecord | None:
    """The live session of this cookie value: not expired, and its token (if it was
    signed in with one) still there and unexpired."""
    if not secret.startswith(SESSION_PREFIX) or len(secret) > 200:
        return None
    stmt = (
        select(web_sessions, api_tokens.c.expires_at.label("token_expires"), api_tokens.c.name)
        .outerjoin(api_tokens, api_tokens.c.name == web_sessions.c.token_name)
        .where(web_sessions.c.id_hash == digest(secret), web_sessions.c.expires_at > now)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    if row is None:
        return None
    token_gone = row.name is None or (row.token_expires is not None and row.token_expires <= now)
    if row.token_name and token_gone:
        return None
    return SessionRecord(
        row.id_hash, row.token_name, row.principal, row.role, row.clusters, row.expires_at
    )


async def end_session(
    engine: AsyncEngine,
    id_hash: str,
    *,
    audit: AuditRecord | None = None,
    lock: asyncio.Lock | None = None,
) -> None:
    async with _locked(lock), engine.begin() as conn:
        await conn.execute(delete(web_sessions).where(web_sessions.c.id_hash == id_hash))
        if audit is not None:
            await add_audit(conn, audit)


async def drop_expired(engine: AsyncEngine, now: float, lock: asyncio.Lock | None = None) -> int:
    """Forget expired sessions and tickets (upkeep)."""
    async with _locked(lock), engine.begin() as conn:
        a = await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at <= now))
        b = await conn.execute(delete(sign_in_tickets).where(sign_in_tickets.c.expires_at <= now))
    return int(a.rowcount or 0) + int(b.rowcount or 0)


# -- one-time sign-in tickets ----------------------------------------------------------------


async def create_ticket(
    engine: AsyncEngine, token_name: str, expires_at: float, lock: asyncio.Lock | None = None
) -> str:
    """A one-time sign-in ticket for an existing token; returns it."""
    secret = new_secret(TICKET_PREFIX)
    async with _locked(lock), engine.begin() as conn:
        await conn.execute(
            insert(sign_in_tickets).values(
                ticket_hash=digest(secret), token_name=token_name, expires_at=expires_at
            )
        )
    return secret


async def redeem_ticket(
    engine: AsyncEngine, secret: str, now: float, lock: asyncio.Lock | None = None
) -> TokenRecord | None:
    """The token a ticket signs in as, consuming the ticket; None if it is unknown, used
    or expired. Two redemptions racing: the one whose delete removes the row wins."""
    if not secret.startswith(TICKET_PREFIX) or len(secret) > 200:
        return None
    key = digest(secret)
    async with _locked(lock), engine.begin() as conn:
        row = (
            await conn.execute(
                select(sign_in_tickets.c.token_name, sign_in_tickets.c.expires_at).where(
                    sign_in_tickets.c.ticket_hash == key
                )
            )
        ).first()
        if row is None:
            return None
        gone = await conn.execute(
            delete(sign_in_tickets).where(sign_in_tickets.c.ticket_hash == key)
        )
        if not gone.rowcount or row.expires_at <= now:
            return None
        token = (
            await conn.execute(select(api_tokens).where(api_tokens.c.name == row.token_name))
        ).first()
    return _token(token) if token is not None else None


# -- hub keys --------------------------------------------------------------------------------


async def _read_key(conn: AsyncConnection, name: str) -> str | None:
    value = await conn.scalar(select(hub_keys.c.value).where(hub_keys.c.name == name))
    return str(value) if value is not None else None


async def hub_key(engine: AsyncEngine, name: str, lock: asyncio.Lock | None = None) -> bytes:
    """A 256-bit key the hub makes once and every replica then reads (the first writer
    wins a race)."""
    async with engine.connect() as conn:
        found = await _read_key(conn, name)
    if found is None:
        try:
            async with _locked(lock), engine.begin() as conn:
                await conn.execute(insert(hub_keys).values(name=name, value=secrets.token_hex(32)))
        except IntegrityError:
            pass
        async with engine.connect() as conn:
            found = await _read_key(conn, name)
    assert found is not None
    return bytes.fromhex(found)
