"""Join tokens and CA bundle pins.

A token is `<secret>.<pin>`: 32 random bytes and the SHA-256 pin of the hub's CA bundle,
both base64url without padding (43 characters each). The secret proves the agent was given
the token; the pin lets the agent trust the hub on first contact without trusting the
network (kubeadm's `--discovery-token-ca-cert-hash`, carried inside the token so the join
command stays short). The hub keeps only the SHA-256 of the whole token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization

MAX_TOKEN_CHARS = 128
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{43}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_bundle(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError if there is none."""
    certs = x509.load_pem_x509_certificates(pem)
    if not certs:
        raise ValueError("no certificate in the CA bundle")
    return certs


def bundle_pin(pem: bytes) -> str:
    """SHA-256 over the DER of every certificate of the bundle, in order: a pin of the whole
    bundle, so nobody can add a CA of theirs to a bundle that still matches."""
    digest = hashlib.sha256()
    for cert in load_bundle(pem):
        digest.update(cert.public_bytes(serialization.Encoding.DER))
    return _b64(digest.digest())


def new_token(pin: str) -> str:
    return f"{_b64(secrets.token_bytes(32))}.{pin}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_token(token: str) -> str:
    """`token` if it is well formed, else ValueError (before anything looks it up)."""
    if len(token) > MAX_TOKEN_CHARS or not TOKEN_PATTERN.match(token):
        raise ValueError("a join token is 87 characters: <43 base64url>.<43 base64url>")
    return token


def pin_of(token: str) -> str:
    return check_token(token).split(".", 1)[1]
