"""The agent-facing endpoints of cluster identity. No user session or role applies here:

- `GET /agent/ca`: public (the CA bundle is no secret; agents check it against the pin
  in their token).
- `POST /agent/join`: authenticated by the one-time join token in the body. Body at most
  32 KiB, token 128 characters, CSR 16 KiB, cluster name `[a-z0-9-]`, 1-63 characters.
- `POST /agent/renew`: authenticated by the cluster's current certificate, presented as
  the TLS client certificate. Body at most 32 KiB, CSR 16 KiB.

They take no cookies, so CSRF does not apply; access control must let them through
without a session. Refusals are 400 (malformed), 401 (no client certificate), 403 (token or
certificate refused), 404 (this hub has no PKI), 413 (too large).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from app.hub.enrolment import Credentials, Enrolment, Refused
from app.pki.requests import MAX_REQUEST_BYTES
from app.pki.tokens import MAX_TOKEN_CHARS
from app.web.deps import HubDep
from app.web.limits import read_json
from app.web.openapi import ENROLMENT_ERRORS, json_body
from app.web.tls import client_certificate

router = APIRouter(prefix="/agent", tags=["agents"], responses=ENROLMENT_ERRORS)

MAX_BODY_BYTES = 32 * 1024


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(min_length=1, max_length=63)
    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)
    csr: str = Field(min_length=1, max_length=MAX_REQUEST_BYTES)


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    csr: str = Field(min_length=1, max_length=MAX_REQUEST_BYTES)


def _enrolment(hub: HubDep) -> Enrolment:
    if hub.identity.enrolment is None:
        raise HTTPException(404, "this hub runs without PKI (insecure mode): nothing to join")
    return hub.identity.enrolment


def _answer(credentials: Credentials) -> dict[str, Any]:
    return {
        "certificate": credentials.certificate,
        "caBundle": credentials.ca_bundle,
        "brokerUrl": credentials.broker_url,
        "notAfter": credentials.not_after,
        "renewAfter": credentials.renew_after,
    }


@router.get("/ca", response_class=PlainTextResponse)
async def ca_bundle(hub: HubDep) -> str:
    return _enrolment(hub).ca_bundle


@router.post("/join", openapi_extra=json_body(JoinRequest))
async def join(request: Request, hub: HubDep) -> dict[str, Any]:
    """Sign the agent's CSR, once per token: `{certificate, caBundle, brokerUrl, notAfter,
    renewAfter}` (times in epoch seconds)."""
    enrolment = _enrolment(hub)
    body = await read_json(request, JoinRequest, MAX_BODY_BYTES)
    try:
        return _answer(await enrolment.join(body.cluster, body.token, body.csr))
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None


@router.post("/renew", openapi_extra=json_body(RenewRequest))
async def renew(request: Request, hub: HubDep) -> dict[str, Any]:
    """Sign a new CSR for the cluster named by the TLS client certificate."""
    enrolment = _enrolment(hub)
    body = await read_json(request, RenewRequest, MAX_BODY_BYTES)
    try:
        return _answer(await enrolment.renew(client_certificate(request), body.csr))
    except Refused as exc:
        raise HTTPException(exc.status, str(exc)) from None
