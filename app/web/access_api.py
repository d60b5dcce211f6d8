"""Access control over HTTP: the admission policy (`GET /policy`, any principal), the
audit log (`GET /audit`) and tokens (`GET/POST /tokens`, `DELETE /tokens/{name}`), both
admin only. A scoped admin sees the audit entries made with its own scope and manages
only tokens of its scope."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from app.access.roles import Principal, Role
from app.access.tokens import EXPIRY_PATTERN, TokenRequest
from app.informer.selectors import LABEL_SELECTOR_PATTERN
from app.store import access as store
from app.store import audit
from app.store.access import TokenExists, TokenRecord
from app.web.auth import AdminDep, ViewerDep, audit_record, needs
from app.web.deps import HubDep
from app.web.openapi import WRITE_ERRORS
from app.web.wire import iso_time
from app.web.workloads import policy_of

router = APIRouter(tags=["access"], dependencies=[needs(Role.VIEWER)], responses=WRITE_ERRORS)

ContinueParam = Annotated[str | None, Query(alias="continue", max_length=19, pattern=r"^[0-9]+$")]
TokenName = Annotated[str, Path(max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")]


@router.get("/policy")
async def get_policy(request: Request) -> dict[str, Any]:
    """What operators may deploy, and the rules that send the rest to admins."""
    return policy_of(request).describe()


def audit_scope(principal: Principal) -> str | None:
    return None if principal.scope.everything else principal.scope.text


def audit_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in row.items() if k != "at"}, "at": iso_time(row["at"])}


@router.get("/audit")
async def get_audit(
    hub: HubDep,
    principal: AdminDep,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_LIMIT)] = 100,
    cursor: ContinueParam = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    actor: Annotated[str | None, Query(max_length=253)] = None,
) -> dict[str, Any]:
    """Changes and sign-in failures, newest first: who (`actor`, `role`, `via`), when,
    what (`action`, `target`, `outcome`, `detail`), from where (`source`)."""
    before = int(cursor) if cursor is not None and len(cursor) < 19 else None
    page = await audit.list_audit(
        hub.engine,
        limit=limit,
        before=before,
        action=action,
        actor=actor,
        scope=audit_scope(principal),
    )
    return {
        "items": [audit_json(r) for r in page.items],
        "continue": str(page.next_before) if page.next_before is not None else None,
    }


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
    role: str = Field(pattern=r"^(viewer|operator|admin)$")
    clusters: str = Field(
        "",
        max_length=1024,
        description="a label selector; empty: every cluster",
        json_schema_extra={"pattern": LABEL_SELECTOR_PATTERN},
    )
    expires: str = Field(
        "never",
        pattern=EXPIRY_PATTERN,
        description="lifetime: 90s, 15m, 12h, 30d, 8w (at most 30 years), or never",
    )


def token_json(t: TokenRecord) -> dict[str, Any]:
    return {
        "name": t.name,
        "role": t.role,
        "clusters": t.clusters or None,
        "createdAt": iso_time(t.created_at),
        "expiresAt": iso_time(t.expires_at) if t.expires_at is not None else None,
        "expired": t.expired(time.time()),
        "createdBy": t.created_by,
    }


def _mine(principal: Principal, token: TokenRecord) -> bool:
    return principal.scope.everything or token.clusters == principal.scope.text


@router.get("/tokens")
async def list_tokens(hub: HubDep, principal: AdminDep) -> dict[str, Any]:
    tokens = await store.list_tokens(hub.engine)
    return {"items": [token_json(t) for t in tokens if _mine(principal, t)]}


@router.post("/tokens", status_code=201)
async def create_token(
    body: TokenCreate, request: Request, hub: HubDep, principal: AdminDep
) -> dict[str, Any]:
    """A new token, shown in the answer only (the hub keeps its hash)."""
    try:
        wanted = TokenRequest.parse(body.name, body.role, body.clusters, body.expires)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if not wanted.grantable_by(principal):
        raise HTTPException(403, "a token may not have more role or clusters than its maker")
    now = time.time()
    detail = f"role {wanted.role}" + (
        f", clusters {wanted.scope.text}" if wanted.scope.text else ""
    )
    try:
        secret = await store.create_token(
            hub.engine,
            name=wanted.name,
            role=str(wanted.role),
            clusters=wanted.scope.text,
            now=now,
            expires_at=now + wanted.lifetime_s if wanted.lifetime_s else None,
            created_by=principal.name,
            audit=audit_record(request, principal, "token.create", wanted.name, detail=detail),
            lock=hub.writer.lock,
        )
    except TokenExists as exc:
        raise HTTPException(409, str(exc)) from None
    return {"name": wanted.name, "role": str(wanted.role), "token": secret}


@router.delete("/tokens/{name}", status_code=204, response_class=Response)
async def revoke_token(
    name: TokenName, request: Request, hub: HubDep, principal: AdminDep
) -> Response:
    """Revoke at once: the token and the dashboard sessions signed in with it stop working."""
    found = {t.name: t for t in await store.list_tokens(hub.engine)}.get(name)
    if found is None or not _mine(principal, found):
        raise HTTPException(404, f"no token named {name!r}")
    await store.revoke_token(
        hub.engine,
        name,
        audit=audit_record(request, principal, "token.revoke", name),
        lock=hub.writer.lock,
    )
    return Response(status_code=204)


@router.get("/whoami")
async def whoami(principal: ViewerDep) -> dict[str, Any]:
    """The principal this request authenticates as."""
    return {
        "name": principal.name,
        "role": str(principal.role),
        "clusters": principal.scope.text or None,
        "via": principal.via,
    }
