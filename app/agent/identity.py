"""The agent's identity: joining with a token, keeping it in a state directory, renewing it.

State directory (`--state-dir`):

    identity.pem   the private key and the certificate (CN = the cluster), 0600, replaced
                   in one step so a key and a certificate that do not match never meet
    ca.pem         the CA bundle: trust anchor for the broker and the hub
    state.json     cluster, hub URL, broker URL, the certificate's end and renewal time

Joining: the token carries a pin of the hub's CA bundle (`app.pki.tokens`). The agent
fetches the bundle, checks the pin, and only then sends its CSR and the token over HTTPS
verified against that bundle. The key is made here and never sent anywhere.

Renewal: at `renewAfter` (2/3 of the lifetime) the agent makes a new key and CSR and sends
it to the hub over HTTPS with its current certificate as the TLS client certificate; then
swaps the certificate into its MQTT link, which reconnects with it (`MqttLink.renew`). A
failed renewal is retried with backoff until the certificate expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.backoff import backoff_delay
from app.pki.authority import key_pem, new_key
from app.pki.layout import write_atomic
from app.pki.requests import make_request
from app.pki.tokens import bundle_pin, pin_of
from app.transport.mqtt import MqttLink
from app.transport.tls import client_context

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30.0
MAX_ANSWER_BYTES = 256 * 1024


class JoinFailed(Exception):
    """Joining or renewing did not work; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    state_dir: Path
    cluster: str
    hub_url: str
    broker_url: str
    not_after: float
    renew_after: float

    @property
    def identity_file(self) -> Path:
        return self.state_dir / "identity.pem"

    @property
    def ca_file(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def expired(self) -> bool:
        return time.time() >= self.not_after

    def tls_context(self) -> ssl.SSLContext:
        return client_context(self.ca_file, self.identity_file)

    @classmethod
    def load(cls, state_dir: Path, cluster: str) -> AgentIdentity | None:
        """The identity kept in `state_dir`; None if there is none yet."""
        path = state_dir / "state.json"
        if not path.exists() or not (state_dir / "identity.pem").exists():
            return None
        state = json.loads(path.read_text())
        if state.get("cluster") != cluster:
            raise JoinFailed(
                f"{state_dir} holds the identity of cluster {state.get('cluster')!r}, "
                f"not {cluster!r}: use another --state-dir"
            )
        return cls(
            state_dir,
            cluster,
            str(state["hubUrl"]),
            str(state["brokerUrl"]),
            float(state["notAfter"]),
            float(state["renewAfter"]),
        )

    def _save(self) -> None:
        state = {
            "cluster": self.cluster,
            "hubUrl": self.hub_url,
            "brokerUrl": self.broker_url,
            "notAfter": self.not_after,
            "renewAfter": self.renew_after,
        }
        write_atomic(self.state_dir / "state.json", json.dumps(state, indent=2).encode(), 0o600)


def _request(
    url: str, context: ssl.SSLContext, body: dict[str, Any] | None = None
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S, context=context) as answer:
            return answer.status, answer.read(MAX_ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(MAX_ANSWER_BYTES)
    except (urllib.error.URLError, OSError) as exc:
        raise JoinFailed(f"cannot reach the hub at {url}: {getattr(exc, 'reason', exc)}") from None


def _refusal(what: str, status: int, body: bytes) -> JoinFailed:
    try:
        detail = json.loads(body).get("detail", body.decode(errors="replace"))
    except (ValueError, AttributeError):
        detail = body.decode(errors="replace")[:300]
    return JoinFailed(f"the hub refused to {what} ({status}): {detail}")


def _unverified() -> ssl.SSLContext:
    """Only for fetching the CA bundle, which is checked against the token's pin."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _store(
    state_dir: Path,
    cluster: str,
    hub_url: str,
    key_and_cert: bytes,
    answer: dict[str, Any],
    ca_bundle: bytes | None,
) -> AgentIdentity:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    if ca_bundle is not None:
        write_atomic(state_dir / "ca.pem", ca_bundle, 0o644)
    write_atomic(state_dir / "identity.pem", key_and_cert, 0o600)
    identity = AgentIdentity(
        state_dir,
        cluster,
        hub_url,
        str(answer["brokerUrl"]),
        float(answer["notAfter"]),
        float(answer["renewAfter"]),
    )
    identity._save()
    return identity


def join_blocking(state_dir: Path, cluster: str, hub_url: str, token: str) -> AgentIdentity:
    hub_url = hub_url.rstrip("/")
    try:
        pin = pin_of(token.strip())
    except ValueError as exc:
        raise JoinFailed(f"the token is malformed: {exc}") from None
    status, bundle = _request(f"{hub_url}/agent/ca", _unverified())
    if status != 200:
        raise _refusal("hand out its CA bundle", status, bundle)
    try:
        matches = bundle_pin(bundle) == pin
    except ValueError:
        matches = False
    if not matches:
        raise JoinFailed(
            f"the CA bundle served by {hub_url} does not match the token's pin: wrong hub URL, "
            "or someone between the agent and the hub"
        )
    key = new_key()
    csr = make_request(key, cluster).decode()
    trusted = client_context(ca_data=bundle.decode())
    status, body = _request(
        f"{hub_url}/agent/join", trusted, {"cluster": cluster, "token": token.strip(), "csr": csr}
    )
    if status != 200:
        raise _refusal("let the agent join", status, body)
    answer = json.loads(body)
    cert = str(answer["certificate"]).encode()
    return _store(state_dir, cluster, hub_url, key_pem(key) + cert, answer, bundle)


def renew_blocking(identity: AgentIdentity) -> AgentIdentity:
    key = new_key()
    csr = make_request(key, identity.cluster).decode()
    status, body = _request(f"{identity.hub_url}/agent/renew", identity.tls_context(), {"csr": csr})
    if status != 200:
        raise _refusal("renew the certificate", status, body)
    answer = json.loads(body)
    cert = str(answer["certificate"]).encode()
    return _store(
        identity.state_dir, identity.cluster, identity.hub_url, key_pem(key) + cert, answer, None
    )


async def join(state_dir: Path, cluster: str, hub_url: str, token: str) -> AgentIdentity:
    return await asyncio.to_thread(join_blocking, state_dir, cluster, hub_url, token)


class Renewer:
    """Renews the identity before it expires and hands each new certificate to the link."""

    def __init__(self, identity: AgentIdentity, link: MqttLink) -> None:
        self.identity = identity
        self._link = link
        self.renewals = 0

    async def run(self) -> None:
        attempt = 0
        while True:
            await asyncio.sleep(max(0.0, self.identity.renew_after - time.time()))
            try:
                renewed = await asyncio.to_thread(renew_blocking, self.identity)
            except (JoinFailed, OSError, ValueError, KeyError) as exc:
                left = self.identity.not_after - time.time()
                delay = min(backoff_delay(attempt, 1.0, 300.0), max(1.0, left / 10))
                attempt += 1
                level = logging.ERROR if left < 3600 else logging.WARNING
                log.log(
                    level,
                    "%s: renewing the certificate failed (%s); %.0f s left, retrying in %.0f s",
                    self.identity.cluster,
                    exc,
                    left,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.identity = renewed
            self.renewals += 1
            log.info(
                "%s: certificate renewed, valid until %s; reconnecting with it",
                renewed.cluster,
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(renewed.not_after)),
            )
            await self._link.renew(str(renewed.identity_file))
