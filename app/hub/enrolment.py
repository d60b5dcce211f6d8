"""Joining and renewing: the hub signs a cluster's certificate request.

- `join` is authenticated by the one-time token (`clusters add` printed it): the request's
  subject must be the registered name, the token is used up in the same transaction that
  records the certificate, and the answer carries the certificate, the CA bundle and the
  broker's URL. The agent's private key never leaves it: only its CSR comes here.
- `renew` is authenticated by the cluster's current certificate, presented as the TLS
  client certificate: the TLS layer has verified it against the CA and its dates; here it
  must also be one the hub issued to a registered cluster and not revoked.

Certificates live `lifetime_s` (30 days by default); agents renew after 2/3 of it.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from cryptography import x509
from sqlalchemy.ext.asyncio import AsyncEngine

from app.hub.registrations import Registrations
from app.pki.authority import Authority, cert_pem, common_name, serial_hex
from app.pki.requests import BadRequest, load_request
from app.pki.tokens import check_token, token_hash
from app.store import registrations as store
from app.transport.topics import check_name

RENEW_AT = 2 / 3
"""Of a certificate's lifetime, when its holder should renew it."""


@dataclass(frozen=True, slots=True)
class Credentials:
    certificate: str
    """PEM; CN is the cluster's name."""
    ca_bundle: str
    broker_url: str
    not_after: float
    renew_after: float


class Refused(Exception):
    """The request is refused; `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Enrolment:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        authority: Authority,
        ca_bundle: bytes,
        broker_url: str,
        lifetime_s: float,
        registrations: Registrations,
    ) -> None:
        self._engine = engine
        self._authority = authority
        self._ca_bundle = ca_bundle.decode()
        self._broker_url = broker_url
        self._lifetime = dt.timedelta(seconds=lifetime_s)
        self._registrations = registrations

    @property
    def ca_bundle(self) -> str:
        return self._ca_bundle

    def _signer(
        self, request: x509.CertificateSigningRequest, cluster: str
    ) -> tuple[list[x509.Certificate], store.Issue]:
        made: list[x509.Certificate] = []

        def issue() -> store.IssuedCertificate:
            cert = self._authority.sign_request(request, cluster, self._lifetime)
            made.append(cert)
            issued_at = time.time()
            return store.IssuedCertificate(
                serial_hex(cert), issued_at, cert.not_valid_after_utc.timestamp()
            )

        return made, issue

    def _credentials(self, cert: x509.Certificate) -> Credentials:
        start = time.time()
        end = cert.not_valid_after_utc.timestamp()
        return Credentials(
            certificate=cert_pem(cert).decode(),
            ca_bundle=self._ca_bundle,
            broker_url=self._broker_url,
            not_after=end,
            renew_after=start + (end - start) * RENEW_AT,
        )

    async def join(self, cluster: str, token: str, csr: str) -> Credentials:
        try:
            check_name(cluster)
            check_token(token)
            request = load_request(csr, cluster)
        except (ValueError, BadRequest) as exc:
            raise Refused(400, str(exc)) from None
        made, issue = self._signer(request, cluster)
        now = time.time()
        verdict, _issued = await store.join(self._engine, cluster, token_hash(token), now, issue)
        again = f"ask an admin for a new one: transport-informer clusters add {cluster} --new-token"
        match verdict:
            case store.TokenVerdict.WRONG:
                raise Refused(403, f"this join token is not valid for cluster {cluster}")
            case store.TokenVerdict.USED:
                raise Refused(403, f"this join token was used already; {again}")
            case store.TokenVerdict.EXPIRED:
                raise Refused(403, f"this join token has expired; {again}")
        await self._registrations.load()
        return self._credentials(made[0])

    async def renew(self, presented: str | None, csr: str) -> Credentials:
        if presented is None:
            raise Refused(
                401, "renewal needs the cluster's current certificate as TLS client certificate"
            )
        current = x509.load_pem_x509_certificate(presented.encode())
        cluster = common_name(current.subject)
        try:
            check_name(cluster)
        except ValueError:
            raise Refused(403, f"{cluster!r} is not a cluster's certificate") from None
        try:
            request = load_request(csr, cluster)
        except BadRequest as exc:
            raise Refused(400, str(exc)) from None
        made, issue = self._signer(request, cluster)
        serial = serial_hex(current)
        if await store.renew(self._engine, cluster, serial, time.time(), issue) is None:
            raise Refused(
                403,
                f"certificate {serial} of {cluster} is revoked or unknown, or {cluster} is no "
                "longer registered",
            )
        return self._credentials(made[0])
