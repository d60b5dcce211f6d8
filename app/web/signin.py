"""Signing in to the dashboard, and out.

- `GET /login`: the form (paste a token). With `?token=` it redeems a one-time sign-in
  ticket (`make demo` prints such a link): the ticket works once, for 15 minutes, and the
  URL it was in is worthless afterwards. API tokens are never accepted in a URL.
- `POST /login`: a token from the form. The request must come from this hub's own page
  (Origin or Referer): nobody can sign a browser in as someone else from another site.
- `POST /logout`: ends the session on the server (the row is deleted) and clears the
  cookie. CSRF-checked like every other dashboard change.

The session cookie is HttpOnly, SameSite=Strict, Path=/, Secure over https, and lasts
`session_ttl_s` (never past its token's expiry).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.access.roles import ClusterScope, Principal, Role
from app.store import access as store
from app.store.access import TokenRecord
from app.web.auth import (
    SESSION_COOKIE,
    AccessConfig,
    NotAuthenticated,
    access_of,
    audit_record,
    check_origin,
    current_principal,
    is_https,
    record_failure,
    source,
    token_principal,
)
from app.web.deps import HubDep

router = APIRouter(include_in_schema=False)


def _next(target: str | None) -> str:
    """Only paths of this hub: a sign-in cannot redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target[:2000]
    return "/"


def login_page(
    request: Request, *, error: str = "", next_path: str = "/", status: int = 200
) -> HTMLResponse:
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request,
        "login.html",
        {"principal": None, "health": {}, "error": error, "next": _next(next_path)},
        status_code=status,
    )
    return response


async def _signed_in(
    request: Request, hub: HubDep, principal: Principal, token: TokenRecord | None, target: str
) -> Response:
    config: AccessConfig = access_of(request)
    now = time.time()
    expires = now + config.session_ttl_s
    if token is not None and token.expires_at is not None:
        expires = min(expires, token.expires_at)
    secret = await store.create_session(
        hub.engine,
        token_name=token.name if token else "",
        principal=principal.name,
        role=str(principal.role),
        clusters=principal.scope.text,
        now=now,
        expires_at=expires,
        source=source(request),
        audit=audit_record(request, principal, "signin", principal.name),
        lock=hub.writer.lock,
    )
    response = RedirectResponse(_next(target), status_code=303)
    secure = config.cookie_secure if config.cookie_secure is not None else is_https(request)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=max(1, int(expires - now)),
        path="/",
        httponly=True,
        samesite="strict",
        secure=secure,
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(
    request: Request,
    hub: HubDep,
    token: Annotated[str | None, Query(max_length=200)] = None,
    next_path: Annotated[str, Query(alias="next", max_length=2000)] = "/",
) -> Response:
    if not token:
        return login_page(request, next_path=next_path)
    found = await store.redeem_ticket(hub.engine, token, time.time(), hub.writer.lock)
    if found is None or found.expired(time.time()):
        await record_failure(request, "signin.failed", "", "sign-in link used, expired or unknown")
        return login_page(
            request,
            error="This sign-in link was used already or has expired. Paste a token instead.",
            status=401,
        )
    principal = Principal(found.name, Role.parse(found.role), ClusterScope.parse(found.clusters))
    return await _signed_in(request, hub, principal, found, next_path)


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    hub: HubDep,
    token: Annotated[str, Form(max_length=200)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2000)] = "/",
) -> Response:
    check_origin(request)
    try:
        principal, record = await token_principal(request, token.strip())
    except NotAuthenticated as exc:
        return login_page(request, error=exc.detail, next_path=next_path, status=401)
    return await _signed_in(request, hub, principal, record, next_path)


@router.post("/logout")
async def logout(request: Request, hub: HubDep) -> Response:
    principal = await current_principal(request)
    if principal.session is not None:
        await store.end_session(
            hub.engine,
            principal.session,
            audit=audit_record(request, principal, "signout", principal.name),
            lock=hub.writer.lock,
        )
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
