"""HTTPS for the hub, and the client certificate handed to the application.

With PKI the hub serves HTTPS with its own certificate, asks every client for a certificate
(optional: browsers and joining agents have none) and verifies any it gets against the CA.
Agents renew with their current certificate as the TLS client certificate.

uvicorn does not fill in the ASGI TLS extension, so `ClientCertificateProtocol` (its h11
protocol) does: `scope["extensions"]["tls"]["client_cert_chain"]` holds the verified
client certificate as PEM, as the ASGI spec names it. Routes read it through
`client_certificate`, never from headers (which anyone can send).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.hub.hub_pki import HubPki


class ClientCertificateProtocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        app = self.app

        async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                extensions = scope.setdefault("extensions", {})
                extensions["tls"] = {"client_cert_chain": chain}
            await app(scope, receive, send)

        self.app = with_certificate


def client_certificate(request: Request) -> str | None:
    """The verified TLS client certificate (PEM) of this request, if it presented one."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return chain[0] if chain else None


def server_options(pki: HubPki | None) -> dict[str, Any]:
    """uvicorn settings: HTTPS with optional client certificates when the hub has a PKI."""
    if pki is None:
        return {}
    return {
        "ssl_certfile": str(pki.cert_file),
        "ssl_keyfile": str(pki.key_file),
        "ssl_ca_certs": str(pki.ca_file),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "http": ClientCertificateProtocol,
    }
