"""`transport-informer tokens create | list | revoke | link`: API tokens, straight in the
database (`--database-url` / `TI_DATABASE_URL`, as `db upgrade`), audited as `cli`.

`create` prints the token once, alone on the last line, so a script can take it with
`tail -n 1`; the database keeps only its SHA-256.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
import time
from datetime import UTC, datetime

from app.access.tokens import SIGN_IN_LINK_TTL_S, TokenRequest
from app.store import access as store
from app.store.audit import AuditRecord
from app.store.db import create_engine
from app.store.migrate import upgrade


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def _audit(action: str, target: str, detail: str = "") -> AuditRecord:
    return AuditRecord(
        at=time.time(),
        actor=_actor(),
        role="",
        via="cli",
        scope="",
        source=f"cli@{socket.gethostname()}",
        action=action,
        target=target,
        outcome="ok",
        detail=detail,
    )


async def create(database_url: str, name: str, role: str, clusters: str, expires: str) -> int:
    try:
        wanted = TokenRequest.parse(name, role, clusters, expires)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    expires_at = now + wanted.lifetime_s if wanted.lifetime_s else None
    scope = f", clusters {wanted.scope.text}" if wanted.scope.text else ""
    engine = create_engine(database_url)
    try:
        secret = await store.create_token(
            engine,
            name=wanted.name,
            role=str(wanted.role),
            clusters=wanted.scope.text,
            now=now,
            expires_at=expires_at,
            created_by=_actor(),
            audit=_audit("token.create", wanted.name, f"role {wanted.role}{scope}"),
        )
    except store.TokenExists as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"token {wanted.name}: role {wanted.role}{scope}, expires {_when(expires_at)}")
    print("shown once (the hub keeps only its hash); use it as Authorization: Bearer <token>")
    print(secret)
    return 0


async def listing(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        tokens = await store.list_tokens(engine)
    finally:
        await engine.dispose()
    now = time.time()
    rows = [("NAME", "ROLE", "CLUSTERS", "EXPIRES", "CREATED", "BY")] + [
        (
            t.name,
            t.role,
            t.clusters or "*",
            _when(t.expires_at) + (" (expired)" if t.expired(now) else ""),
            _when(t.created_at),
            t.created_by,
        )
        for t in tokens
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


async def revoke(database_url: str, name: str) -> int:
    engine = create_engine(database_url)
    try:
        found = await store.revoke_token(engine, name, audit=_audit("token.revoke", name))
    finally:
        await engine.dispose()
    if not found:
        print(f"error: no token named {name!r}", file=sys.stderr)
        return 1
    print(f"revoked {name} (its dashboard sessions ended with it)")
    return 0


async def link(database_url: str, name: str, base_url: str) -> int:
    """A one-time sign-in link for the dashboard, as the token `name`."""
    engine = create_engine(database_url)
    try:
        tokens = {t.name for t in await store.list_tokens(engine)}
        if name not in tokens:
            print(f"error: no token named {name!r}", file=sys.stderr)
            return 1
        ticket = await store.create_ticket(engine, name, time.time() + SIGN_IN_LINK_TTL_S)
    finally:
        await engine.dispose()
    print(f"sign in once, within {SIGN_IN_LINK_TTL_S // 60} minutes, as {name}:")
    print(f"{base_url.rstrip('/')}/login?token={ticket}")
    return 0


def run(args: argparse.Namespace, database_url: str) -> int:
    upgrade(database_url)
    command = args.tokens_command
    if command == "create":
        return asyncio.run(
            create(
                database_url,
                args.name,
                args.role,
                args.clusters or "",
                args.expires or "never",
            )
        )
    if command == "list":
        return asyncio.run(listing(database_url))
    if command == "revoke":
        return asyncio.run(revoke(database_url, args.name))
    return asyncio.run(link(database_url, args.name, args.base_url))
