"""Cluster registration from the dashboard and the API: an unscoped ADMIN's routes, all on
this one router (`needs(Role.ADMIN)` plus a check that the admin's scope is every cluster:
a cluster-scoped admin cannot register or remove clusters). Every change is audited
(`cluster.add`, `cluster.remove`).

- `GET /registrations`: registered clusters with their labels, token state and current
  certificate.
- `POST /clusters` `{"name", "labels"?, "tokenTtlSeconds"?}`: register; 201 with
  `{cluster, token, expiresAt, command}`. Body at most 16 KiB; a bad name, labels or TTL
  (1 s to 7 days) is 400, a taken name 409, a hub without PKI 409.
- `DELETE /clusters/{cluster}?keepInventory=true|false`: unregister and revoke; answers when
  the hub refuses it, its inventory is deleted (or kept), and the broker refuses and has
  disconnected it. Unknown: 404.
- `POST /ui/registrations` (form: name, labels): the "Add cluster" dialog; the join command
  as an HTML fragment, or the reason it was refused.

The token is shown once, in the answer; only its hash is stored.
"""

from __future__ import annotations

import html
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from app.access.roles import Role
from app.config import parse_labels
from app.hub.cluster_admin import JoinTicket, add_cluster
from app.store import registrations as store
from app.store.audit import write_audit
from app.web.auth import AdminDep, audit_record, current_principal, needs
from app.web.deps import HubDep
from app.web.limits import read_json
from app.web.openapi import CLUSTER_ADMIN_ERRORS, json_body


async def _unscoped_admin(principal: AdminDep) -> None:
    if not principal.scope.everything:
        raise HTTPException(403, "registering and removing clusters needs an unscoped admin")


router = APIRouter(
    tags=["cluster registration (admin)"],
    dependencies=[needs(Role.ADMIN), Depends(_unscoped_admin)],
    responses=CLUSTER_ADMIN_ERRORS,
)

MAX_BODY_BYTES = 16 * 1024


class NewCluster(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)
    token_ttl_s: float | None = Field(default=None, alias="tokenTtlSeconds", gt=0)


def _hub_url(request: Request, hub: HubDep) -> str:
    if hub.settings.public_url:
        return hub.settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


async def _register(
    request: Request, hub: HubDep, name: str, labels: dict[str, str], ttl_s: float | None
) -> JoinTicket:
    if hub.pki is None:
        raise HTTPException(409, "this hub runs without PKI (insecure mode): nothing can join")
    try:
        ticket = await add_cluster(
            hub.engine,
            name,
            labels,
            ca_bundle=hub.pki.ca_bundle(),
            hub_url=_hub_url(request, hub),
            token_ttl_s=ttl_s or hub.settings.join_token_ttl_s,
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except store.AlreadyRegistered:
        raise HTTPException(409, f"cluster {name} is registered already") from None
    hub.identity.registrations.added(name, labels)
    principal = await current_principal(request)
    detail = ", ".join(f"{k}={v}" for k, v in labels.items())
    await write_audit(
        hub.engine,
        audit_record(request, principal, "cluster.add", name, detail=detail),
        hub.writer.lock,
    )
    return ticket


def _ticket_json(ticket: JoinTicket) -> dict[str, Any]:
    return {
        "cluster": ticket.cluster,
        "token": ticket.token,
        "expiresAt": ticket.expires_at,
        "command": ticket.command,
    }


@router.get("/registrations")
async def list_registrations(hub: HubDep) -> dict[str, Any]:
    now = time.time()
    items = []
    for reg in await store.list_registrations(hub.engine, now):
        cert = reg.certificate
        items.append(
            {
                "name": reg.name,
                "labels": reg.labels,
                "registeredAt": reg.registered_at,
                "auto": reg.auto,
                "token": (
                    "used"
                    if reg.token_used_at is not None
                    else "expired"
                    if reg.has_token and reg.token_expires_at <= now
                    else "pending"
                    if reg.has_token
                    else None
                ),
                "certificate": (
                    {"serial": cert.serial, "notAfter": cert.not_after} if cert else None
                ),
            }
        )
    return {"items": items}


@router.post("/clusters", status_code=201, openapi_extra=json_body(NewCluster))
async def register_cluster(request: Request, hub: HubDep) -> dict[str, Any]:
    body = await read_json(request, NewCluster, MAX_BODY_BYTES)
    return _ticket_json(await _register(request, hub, body.name, body.labels, body.token_ttl_s))


@router.delete("/clusters/{cluster}")
async def remove_cluster(
    cluster: Annotated[str, Path(max_length=63)],
    request: Request,
    hub: HubDep,
    principal: AdminDep,
    keep_inventory: Annotated[bool, Query(alias="keepInventory")] = False,
) -> dict[str, Any]:
    """Done when this answers: the hub refuses the cluster, its inventory is deleted (or
    kept), and with PKI the broker refuses its certificates and has closed its connection
    (`revokedAtBroker` says whether the broker was seen to take up the new CRL)."""
    name = cluster
    try:
        removed = await hub.identity.remove(name, keep_inventory=keep_inventory)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if not removed:
        raise HTTPException(404, f"cluster {name} is not registered")
    detail = "inventory kept" if keep_inventory else "inventory deleted"
    await write_audit(
        hub.engine,
        audit_record(request, principal, "cluster.remove", name, detail=detail),
        hub.writer.lock,
    )
    revocation = hub.identity.revocation
    return {
        "cluster": name,
        "removed": True,
        "inventoryKept": keep_inventory,
        "revokedAtBroker": revocation.in_force if revocation is not None else None,
    }


@router.post("/ui/registrations", response_class=HTMLResponse, include_in_schema=False)
async def register_from_dialog(
    request: Request,
    hub: HubDep,
    name: Annotated[str, Form(max_length=63)],
    labels: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    try:
        parsed = parse_labels(labels)
    except ValueError as exc:
        return HTMLResponse(f'<p class="error" role="alert">{html.escape(str(exc))}</p>', 400)
    try:
        ticket = await _register(request, hub, name.strip(), parsed, None)
    except HTTPException as exc:
        return HTMLResponse(
            f'<p class="error" role="alert">{html.escape(str(exc.detail))}</p>', exc.status_code
        )
    minutes = round((ticket.expires_at - time.time()) / 60)
    return HTMLResponse(
        f"<p>Registered <b>{html.escape(ticket.cluster)}</b>. Run this in the cluster; the "
        f"token works once, within {minutes} minutes, and is not shown again:</p>"
        f'<pre class="command"><code>{html.escape(ticket.command)}</code></pre>',
        201,
    )
