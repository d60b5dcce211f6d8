"""Joining with a one-time token and renewing with the current certificate, against a live
hub on HTTPS and the shipped broker."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.agent.identity import AgentIdentity, JoinFailed, join, renew_blocking
from app.broker import Mosquitto
from app.pki.authority import common_name, serial_hex
from app.pki.tokens import new_token
from app.transport import probe
from tests.identity.conftest import Pki, pki_hub, register

pytestmark = pytest.mark.timeout(60)


def certificate(identity: AgentIdentity) -> x509.Certificate:
    return x509.load_pem_x509_certificates(identity.identity_file.read_bytes())[0]


async def test_a_token_joins_once_and_the_certificate_names_the_registered_cluster(
    secure_broker: Mosquitto, pki: Pki, database_url: str, tmp_path: Path
) -> None:
    requests: list[tuple[str, bytes]] = []
    async with pki_hub(secure_broker, pki, database_url, requests) as hub:
        ticket = await register(hub, "prod-1", labels={"env": "prod"})
        assert ticket["command"].startswith(
            f"transport-informer agent --cluster prod-1 --join {hub.url} "
            f"--token {ticket['token']} --state-dir /var/lib/transport-informer"
        )
        identity = await join(tmp_path / "a", "prod-1", hub.url, ticket["token"])
        cert = certificate(identity)
        assert common_name(cert.subject) == "prod-1"
        assert cert.issuer == pki.authority.certificate.subject
        assert identity.broker_url == secure_broker.url
        assert identity.not_after - identity.renew_after == pytest.approx(10 * 86400, rel=0.01)
        answer = await probe.attempt("127.0.0.1", secure_broker.port, identity.tls_context())
        assert answer is probe.Answer.ACCEPTED

        with pytest.raises(JoinFailed, match="used already"):
            await join(tmp_path / "b", "prod-1", hub.url, ticket["token"])
        listed = (await hub.get("/registrations"))["items"]
        assert [(r["name"], r["token"], r["certificate"]["serial"]) for r in listed] == [
            ("prod-1", "used", serial_hex(cert))
        ]

    key = identity.identity_file.read_text().split("-----BEGIN CERTIFICATE-----")[0]
    private = serialization.load_pem_private_key(key.encode(), None)
    secret = private.private_numbers().private_value  # type: ignore[union-attr]
    forms = [key.strip().encode(), f"{secret:x}".encode(), str(secret).encode()]
    assert [path for path, _ in requests].count("/agent/join") == 2
    for path, body in requests:
        assert not any(form in body for form in forms), path


async def test_an_expired_a_wrong_a_malformed_or_a_foreign_token_is_refused_with_a_reason(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(secure_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        short = await register(hub, "prod-1", tokenTtlSeconds=0.5)
        await asyncio.sleep(0.7)
        with pytest.raises(JoinFailed, match="expired"):
            await join(tmp_path / "s", "prod-1", hub.url, short["token"])
        pin = short["token"].split(".")[1]
        with pytest.raises(JoinFailed, match="not valid for cluster prod-1"):
            await join(tmp_path / "s", "prod-1", hub.url, new_token(pin))
        with pytest.raises(JoinFailed, match="not valid for cluster ghost"):
            await join(tmp_path / "s", "ghost", hub.url, new_token(pin))
        with pytest.raises(JoinFailed, match="malformed"):
            await join(tmp_path / "s", "prod-1", hub.url, "let-me-in")
        foreign_pin = new_token("A" * 43)
        with pytest.raises(JoinFailed, match="does not match the token's pin"):
            await join(tmp_path / "s", "prod-1", hub.url, foreign_pin)
        assert not (tmp_path / "s" / "identity.pem").exists()


async def test_renewal_needs_the_current_certificate_and_a_registered_cluster(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(secure_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        ticket = await register(hub, "prod-1")
        first = await join(tmp_path / "a", "prod-1", hub.url, ticket["token"])
        old = certificate(first)
        renewed = await asyncio.to_thread(renew_blocking, first)
        new = certificate(renewed)
        assert common_name(new.subject) == "prod-1" and new.serial_number != old.serial_number
        assert new.public_key() != old.public_key()  # a new key, made by the agent

        no_certificate = await hub.http.post("/agent/renew", json={"csr": "x"})
        assert no_certificate.status_code == 401
        hubs_own = await asyncio.to_thread(
            _renew_as, hub.url, pki.dir.ca_cert, pki.dir.hub_cert, pki.dir.hub_key
        )
        assert hubs_own[0] == 403 and "not a cluster's certificate" in hubs_own[1]

        removed = await hub.http.delete("/clusters/prod-1")
        assert removed.status_code == 200 and removed.json()["revokedAtBroker"] is True
        with pytest.raises(JoinFailed, match=r"403.*revoked or unknown"):
            await asyncio.to_thread(renew_blocking, renewed)


def _renew_as(url: str, ca: Path, cert: Path, key: Path) -> tuple[int, str]:
    """POST /agent/renew presenting `cert` (status, text)."""
    import json
    import urllib.error
    import urllib.request

    from app.transport.tls import client_context

    request = urllib.request.Request(
        f"{url}/agent/renew",
        data=json.dumps({"csr": "x" * 10}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=client_context(ca, cert, key)) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _csr(cn: str) -> str:
    from app.pki.authority import new_key
    from app.pki.requests import make_request

    return make_request(new_key(), cn).decode()


LIMITS = [
    (
        "POST",
        "/agent/join",
        {"cluster": "prod-1", "token": "t", "csr": "x" * 40_000},
        413,
        "limited",
    ),
    ("POST", "/agent/join", {"cluster": "prod-1", "token": "t" * 200, "csr": "x"}, 400, "token"),
    ("POST", "/agent/join", {"cluster": "prod-1", "token": "t", "csr": "x" * 17_000}, 400, "csr"),
    (
        "POST",
        "/agent/join",
        {"cluster": "Prod_1", "token": "a" * 43 + "." + "b" * 43, "csr": "x"},
        400,
        "must be 1-63",
    ),
    (
        "POST",
        "/agent/join",
        {"cluster": "prod-1", "token": "a" * 43 + "." + "b" * 43, "csr": "x"},
        400,
        "BEGIN CERTIFICATE REQUEST",
    ),
    (
        "POST",
        "/agent/join",
        {"cluster": "prod-1", "token": "a" * 43 + "." + "b" * 43, "csr": "CSR:prod-2"},
        400,
        "exactly CN=prod-1",
    ),
    (
        "POST",
        "/agent/join",
        {"cluster": "prod-1", "token": "a" * 43 + "." + "b" * 43, "csr": "CSR:prod-1", "x": 1},
        400,
        "extra",
    ),
    ("POST", "/agent/renew", {"csr": "x"}, 401, "client certificate"),
    ("POST", "/clusters", {"name": "x" * 64}, 400, "name"),
    ("POST", "/clusters", {"name": "ok", "labels": {"bad key!": "v"}}, 400, "label key"),
    ("POST", "/clusters", {"name": "ok", "tokenTtlSeconds": 10 * 86400}, 400, "token lives"),
    ("POST", "/clusters", {"name": "ok", "labels": {"k": "v" * 20_000}}, 413, "limited"),
    ("POST", "/clusters", {"name": "taken"}, 409, "registered already"),
    ("DELETE", "/clusters/ghost", None, 404, "not registered"),
    ("DELETE", "/clusters/Not_A_Name", None, 400, "must be 1-63"),
]


async def test_every_input_has_a_limit_and_a_clear_refusal(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(secure_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        await register(hub, "taken")
        for method, path, body, status, says in LIMITS:
            if body and isinstance(body.get("csr"), str) and body["csr"].startswith("CSR:"):
                body = {**body, "csr": _csr(body["csr"][4:])}
            response = await hub.http.request(method, path, json=body)
            assert response.status_code == status, (path, body and list(body), response.text)
            assert re.search(says, response.json()["detail"], re.I), response.text


async def test_the_add_cluster_dialog_registers_and_shows_the_command_once(
    secure_broker: Mosquitto, pki: Pki, tmp_path: Path
) -> None:
    async with pki_hub(secure_broker, pki, f"sqlite:///{tmp_path}/hub.db") as hub:
        page = await hub.http.get("/")
        assert 'data-open="add-cluster"' in page.text and 'hx-post="/ui/registrations"' in page.text
        form = {"name": "prod-3", "labels": "env=prod,region=us"}
        made = await hub.http.post("/ui/registrations", data=form)
        assert made.status_code == 201, made.text
        assert f"transport-informer agent --cluster prod-3 --join {hub.url} --token " in made.text
        listed = (await hub.get("/registrations"))["items"]
        assert [(r["name"], r["labels"], r["token"]) for r in listed] == [
            ("prod-3", {"env": "prod", "region": "us"}, "pending")
        ]
        again = await hub.http.post("/ui/registrations", data=form)
        assert again.status_code == 409 and "registered already" in again.text
        bad = await hub.http.post("/ui/registrations", data={"name": "p", "labels": "oops"})
        assert bad.status_code == 400 and "k=v" in bad.text
        long = await hub.http.post("/ui/registrations", data={"name": "p" * 64})
        assert long.status_code == 422
