"""Who is asking: authentication, roles and CSRF for every HTTP request.

A request is authenticated by the first of these that it carries:

1. the auth-proxy user header (and groups header), believed only from a configured proxy
   address (Grafana's auth.proxy model); from anywhere else the header is ignored and
   the attempt recorded;
2. `Authorization: Bearer <token>`: an API token (`transport-informer tokens create`) or
   the configured bootstrap token. A token that is wrong, revoked or expired is refused
   (401) even if a session cookie came too;
3. the dashboard's session cookie (`ti_session`, set by `/login`).

Every route but `/healthz`, `/readyz`, the sign-in page and `/static` needs a principal:
`requires(role)` is the dependency, so guarding a router is one line,
`APIRouter(dependencies=[needs(Role.ADMIN)])`, and a route that wants the principal takes
`ViewerDep`, `OperatorDep` or `AdminDep`.

Requests authenticated by something the browser sends by itself (the session cookie, or
the proxy's own cookie behind the proxy) must prove they come from the dashboard when they
change anything: an Origin (or Referer) of this hub, and the CSRF token bound to the
session, as the `X-CSRF-Token` header (htmx) or the `csrf_token` form field. Bearer tokens
are never sent by a browser on its own, so they need neither.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, params

from app.access.roles import EVERYTHING, ClusterScope, Principal, Role
from app.config import HubSettings
from app.hub.service import HubService
from app.store import access as store
from app.store.audit import AuditRecord, write_audit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_COOKIE = "ti_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MIN_BOOTSTRAP_CHARS = 32

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NotAuthenticated(Exception):
    """No usable credentials: answered 401 (the sign-in form for a dashboard page)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Grant:
    """What an auth-proxy group gives: a role, in a cluster scope."""

    role: Role
    scope: ClusterScope = EVERYTHING

    @classmethod
    def parse(cls, text: str) -> Grant:
        """`role` or `role:selector`."""
        role, _, selector = text.partition(":")
        return cls(Role.parse(role), ClusterScope.parse(selector))


def _networks(text: str) -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


@dataclass
class AccessConfig:
    """The access settings, parsed once (`from_settings` raises ValueError for bad ones)."""

    bootstrap_hash: bytes | None = None
    proxy_user_header: str | None = None
    proxy_groups_header: str = "X-Forwarded-Groups"
    proxy_networks: tuple[Network, ...] = ()
    proxy_groups: dict[str, Grant] = field(default_factory=dict)
    proxy_default: Grant | None = None
    session_ttl_s: float = 12 * 3600
    cookie_secure: bool | None = None
    trusted_origins: frozenset[str] = frozenset()
    metrics_public: bool = False
    csrf_key: bytes = b""
    """Made once per database (`hub_keys`), read in the lifespan."""

    @classmethod
    def from_settings(cls, s: HubSettings) -> AccessConfig:
        bootstrap = None
        if s.bootstrap_token is not None:
            secret = s.bootstrap_token.get_secret_value()
            if len(secret) < MIN_BOOTSTRAP_CHARS:
                raise ValueError(f"TI_BOOTSTRAP_TOKEN must be at least {MIN_BOOTSTRAP_CHARS} chars")
            bootstrap = hashlib.sha256(secret.encode()).digest()
        networks = _networks(s.auth_proxy_addresses)
        if s.auth_proxy_user_header and not networks:
            raise ValueError("auth-proxy mode needs TI_AUTH_PROXY_ADDRESSES (the proxy's IPs)")
        return cls(
            bootstrap_hash=bootstrap,
            proxy_user_header=s.auth_proxy_user_header or None,
            proxy_groups_header=s.auth_proxy_groups_header,
            proxy_networks=networks,
            proxy_groups={g: Grant.parse(v) for g, v in s.auth_proxy_groups.items()},
            proxy_default=Grant.parse(s.auth_proxy_default_role)
            if s.auth_proxy_default_role
            else None,
            session_ttl_s=s.session_ttl_s,
            cookie_secure=s.cookie_secure,
            trusted_origins=frozenset(
                _netloc(o) for o in s.trusted_origins.split(",") if o.strip()
            ),
            metrics_public=s.metrics_public,
        )

    def trusts(self, address: str) -> bool:
        """Whether `address` is one of the configured proxies."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxy_networks)

    def grant(self, groups: list[str]) -> Grant | None:
        """The highest role among the user's groups; among grants of that role an
        unscoped one wins, else the first in the setting's order."""
        found = [self.proxy_groups[g] for g in self.proxy_groups if g in groups]
        if not found:
            return self.proxy_default
        top = max(g.role for g in found)
        best = [g for g in found if g.role == top]
        return next((g for g in best if g.scope.everything), best[0])


def _netloc(origin: str) -> str:
    return urlsplit(origin.strip()).netloc.lower()


def access_of(request: Request) -> AccessConfig:
    config: AccessConfig = request.app.state.access
    return config


def _hub(request: Request) -> HubService:
    hub: HubService = request.app.state.hub
    return hub


def peer(request: Request) -> str:
    return request.client.host if request.client else ""


def source(request: Request) -> str:
    """Where a request came from, for the audit log: the peer address, and the client a
    trusted proxy forwarded for."""
    address = peer(request)
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and access_of(request).trusts(address):
        return f"{forwarded.split(',')[0].strip()[:64]} via {address}"
    return address


def is_https(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    return access_of(request).trusts(peer(request)) and (
        request.headers.get("x-forwarded-proto", "").lower() == "https"
    )


# -- the audit of attempts ----------------------------------------------------------------


class FailureGate:
    """Bounds how many failed attempts are written to the audit log: `per_source` a
    minute from one address and `total` a minute overall; the rest are counted and the
    count goes into the next entry written. Flooding failures cannot flush the log."""

    def __init__(self, per_source: int = 10, total: int = 100) -> None:
        self._per_source = per_source
        self._total = total
        self._window = 0
        self._counts: dict[str, int] = {}
        self.suppressed = 0

    def admit(self, source: str, now: float) -> bool:
        window = int(now // 60)
        if window != self._window:
            self._window, self._counts = window, {}
        seen = self._counts.get(source, 0)
        if seen >= self._per_source or sum(self._counts.values()) >= self._total:
            self.suppressed += 1
            return False
        self._counts[source] = seen + 1
        return True


def audit_record(
    request: Request,
    principal: Principal | None,
    action: str,
    target: str,
    *,
    outcome: str = "ok",
    detail: str = "",
) -> AuditRecord:
    return AuditRecord(
        at=time.time(),
        actor=principal.name if principal else "",
        role=str(principal.role) if principal else "",
        via=principal.via if principal else "",
        scope=principal.scope.text if principal else "",
        source=source(request),
        action=action,
        target=target,
        outcome=outcome,
        detail=detail,
    )


async def record_failure(
    request: Request, action: str, target: str, detail: str, principal: Principal | None = None
) -> None:
    """An attempt that failed (sign-in, a role refused), rate-limited per source."""
    gate: FailureGate = request.app.state.failures
    where = peer(request)
    if not gate.admit(where, time.time()):
        return
    if gate.suppressed:
        detail = f"{detail} ({gate.suppressed} similar failures before this were not recorded)"
        gate.suppressed = 0
    hub = _hub(request)
    outcome = "denied" if principal else "failed"
    record = audit_record(request, principal, action, target, outcome=outcome, detail=detail)
    await write_audit(hub.engine, record, hub.writer.lock)


# -- authentication ------------------------------------------------------------------------


def _proxy_principal(request: Request, config: AccessConfig, user: str) -> Principal:
    groups_text = request.headers.get(config.proxy_groups_header, "")
    groups = [g.strip() for g in groups_text.split(",") if g.strip()]
    grant = config.grant(groups)
    if grant is None:
        raise HTTPException(403, f"user {user[:253]!r} has no role on this hub (no mapped group)")
    return Principal(user[:253], grant.role, grant.scope, via="proxy")


async def token_principal(
    request: Request, secret: str
) -> tuple[Principal, store.TokenRecord | None]:
    """The principal of a token (and its record; None for the bootstrap token).
    NotAuthenticated, recorded in the audit log, for a token that does not work."""
    config = access_of(request)
    digest = hashlib.sha256(secret.encode()).digest()
    if config.bootstrap_hash is not None and hmac.compare_digest(digest, config.bootstrap_hash):
        return Principal("bootstrap", Role.ADMIN, EVERYTHING, via="bootstrap"), None
    token = await store.token_by_secret(_hub(request).engine, secret)
    if token is None:
        await record_failure(request, "signin.failed", "", "unknown or revoked token")
        raise NotAuthenticated("invalid token (unknown or revoked)")
    if token.expired(time.time()):
        await record_failure(request, "signin.failed", token.name, "expired token")
        raise NotAuthenticated(f"token {token.name!r} has expired")
    scope = ClusterScope.parse(token.clusters)
    return Principal(token.name, Role.parse(token.role), scope, via="token"), token


async def authenticate(request: Request) -> Principal | None:
    """The principal of this request, None if it carries no credentials (cached on the
    request). Raises NotAuthenticated for credentials that do not work."""
    if hasattr(request.state, "principal"):
        found: Principal | None = request.state.principal
        return found
    config = access_of(request)
    principal: Principal | None = None
    header = config.proxy_user_header
    if header and (user := request.headers.get(header, "").strip()):
        if config.trusts(peer(request)):
            principal = _proxy_principal(request, config, user)
        else:
            await record_failure(
                request, "signin.failed", user[:253], f"{header} from an untrusted address"
            )
    authorization = request.headers.get("authorization")
    if principal is None and authorization is not None:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotAuthenticated("use Authorization: Bearer <token>")
        principal, _ = await token_principal(request, secret.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if principal is None and cookie:
        record = await store.session_by_secret(_hub(request).engine, cookie, time.time())
        if record is not None:
            principal = Principal(
                record.principal,
                Role.parse(record.role),
                ClusterScope.parse(record.clusters),
                via="session",
                session=record.id_hash,
            )
    request.state.principal = principal
    return principal


# -- CSRF -----------------------------------------------------------------------------------


def csrf_token(request: Request, principal: Principal) -> str:
    """The token a page of this principal carries: an HMAC of its session (or proxy user),
    so it is worthless once the session ends and cannot be made without the hub's key."""
    bound = f"session:{principal.session}" if principal.session else f"proxy:{principal.name}"
    mac = hmac.new(access_of(request).csrf_key, bound.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def check_origin(request: Request) -> None:
    """403 unless the request's Origin (or, lacking one, its Referer) is this hub or a
    trusted origin."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        origin = request.headers.get("referer")
    if not origin:
        raise HTTPException(403, "refused: a dashboard request must carry Origin or Referer")
    allowed = {request.headers.get("host", "").lower(), *access_of(request).trusted_origins}
    if _netloc(origin) not in allowed:
        raise HTTPException(403, f"refused: cross-origin request from {origin[:100]!r}")


async def check_csrf(request: Request, principal: Principal) -> None:
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if sent is None and content_type.startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, csrf_token(request, principal)):
        raise HTTPException(403, "refused: missing or wrong CSRF token (reload the page)")


async def current_principal(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise NotAuthenticated("sign in: send Authorization: Bearer <token>, or use /login")
    if request.method not in SAFE_METHODS and principal.via in ("session", "proxy"):
        await check_csrf(request, principal)
    return principal


@functools.cache
def requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """The dependency that lets through principals of `role` or above (403 otherwise).
    One function per role, so FastAPI runs it once per request however often it is named."""

    async def dependency(
        request: Request, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Principal:
        if not principal.may(role):
            if request.method not in SAFE_METHODS:
                await record_failure(
                    request,
                    "forbidden",
                    f"{request.method} {request.url.path}",
                    f"needs {role}",
                    principal,
                )
            raise HTTPException(
                403, f"this needs the {role} role; {principal.name} is {principal.role}"
            )
        return principal

    dependency.__name__ = f"requires_{role}"
    return dependency


def needs(role: Role) -> Any:
    """`APIRouter(dependencies=[needs(Role.ADMIN)])`: every route of the router needs it."""
    dep: params.Depends = Depends(requires(role))
    return dep


ViewerDep = Annotated[Principal, Depends(requires(Role.VIEWER))]
OperatorDep = Annotated[Principal, Depends(requires(Role.OPERATOR))]
AdminDep = Annotated[Principal, Depends(requires(Role.ADMIN))]


async def metrics_access(request: Request) -> None:
    """/metrics: open with `metrics_public`, else any unscoped principal (the metrics are
    fleet-wide totals)."""
    if access_of(request).metrics_public:
        return
    principal = await current_principal(request)
    if not principal.scope.everything:
        raise HTTPException(403, "the metrics cover every cluster: they need an unscoped token")
