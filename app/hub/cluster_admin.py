"""Registering and removing clusters: what `transport-informer clusters add/list/remove` and
the dashboard's admin routes do, straight against the database.

Adding makes a one-time join token (the hub keeps its hash only) and the agent command that
uses it. Removing unregisters the cluster and revokes its certificates in one transaction;
the hub (this process, or any other hub reading the same database within
`registry_refresh_s`) then refuses its queued messages, deletes or keeps its inventory and
has the broker refuse and disconnect it (`ClusterIdentity`).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import check_labels
from app.pki.tokens import bundle_pin, new_token, token_hash
from app.store import registrations as store
from app.transport.topics import check_name

DEFAULT_STATE_DIR = "/var/lib/transport-informer"
MAX_TOKEN_TTL_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class JoinTicket:
    cluster: str
    token: str
    expires_at: float
    command: str
    """The agent command line that joins with this token."""


def agent_command(
    cluster: str,
    hub_url: str,
    token: str,
    state_dir: str = DEFAULT_STATE_DIR,
    source_kind: str = "kubernetes",
    token_file: str | None = None,
) -> str:
    """With `token_file`, the command reads the token from it (kept out of `ps`)."""
    args = [
        "transport-informer",
        "agent",
        "--cluster",
        cluster,
        "--join",
        hub_url,
        *(("--token-file", token_file) if token_file else ("--token", token)),
        "--state-dir",
        state_dir,
        "--source-kind",
        source_kind,
    ]
    return shlex.join(args)


async def add_cluster(
    engine: AsyncEngine,
    name: str,
    labels: dict[str, str],
    *,
    ca_bundle: bytes,
    hub_url: str,
    token_ttl_s: float,
    new_token_only: bool = False,
    state_dir: str = DEFAULT_STATE_DIR,
) -> JoinTicket:
    """Register `name` (or, with `new_token_only`, give a registered cluster a new token,
    and new labels if any are given). ValueError for a bad name, labels or lifetime;
    `store.AlreadyRegistered` / `store.NotRegistered`."""
    check_name(name)
    check_labels(labels)
    if not 0 < token_ttl_s <= MAX_TOKEN_TTL_S:
        raise ValueError(f"a token lives between 1 s and {MAX_TOKEN_TTL_S:.0f} s")
    token = new_token(bundle_pin(ca_bundle))
    now = time.time()
    expires = now + token_ttl_s
    if new_token_only:
        await store.new_token(
            engine,
            name,
            token_hash=token_hash(token),
            token_expires_at=expires,
            labels=labels or None,
        )
    else:
        await store.register(
            engine, name, labels, token_hash=token_hash(token), token_expires_at=expires, now=now
        )
    return JoinTicket(name, token, expires, agent_command(name, hub_url, token, state_dir))


async def remove_cluster(engine: AsyncEngine, name: str, *, keep_inventory: bool) -> bool:
    """False if `name` was not registered."""
    check_name(name)
    return await store.request_removal(engine, name, keep_inventory=keep_inventory, now=time.time())
