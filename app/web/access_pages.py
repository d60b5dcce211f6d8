"""Dashboard pages of access control: the audit log (admins) and the admission policy."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.access.roles import Role
from app.store import audit
from app.web.access_api import audit_scope
from app.web.auth import AdminDep, needs
from app.web.deps import HubDep
from app.web.pages import render_page
from app.web.resilience import RetryingRoute
from app.web.workloads import policy_of

router = APIRouter(
    include_in_schema=False, route_class=RetryingRoute, dependencies=[needs(Role.VIEWER)]
)


@router.get("/ui/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    hub: HubDep,
    principal: AdminDep,
    cursor: Annotated[
        str | None, Query(alias="continue", max_length=18, pattern=r"^[0-9]+$")
    ] = None,
    action: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    page = await audit.list_audit(
        hub.engine,
        limit=100,
        before=int(cursor) if cursor else None,
        action=action or None,
        scope=audit_scope(principal),
    )
    return await render_page(request, hub, "audit.html", page=page, action=action)


@router.get("/ui/policy", response_class=HTMLResponse)
async def policy_page(request: Request, hub: HubDep) -> HTMLResponse:
    return await render_page(request, hub, "policy.html", policy=policy_of(request).describe())
