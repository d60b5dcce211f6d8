"""`transport-informer pki init`: the files of a PKI directory, and writing them safely.

    ca.crt  ca.key         the CA: trust anchor of broker, hub and agents; signs clusters
    broker.crt broker.key  the broker's TLS server certificate (CN broker.<source>)
    hub.crt hub.key        the hub's certificate: MQTT client and HTTPS server (CN hub.<source>)
    crl.pem                revoked cluster certificates, read by the broker (`crlfile`)

Keys are written 0600. Operators with their own CA point the hub at their files instead
(`TI_CA_FILE`, `TI_CERT_FILE`, `TI_KEY_FILE`, `TI_SIGNER_CERT_FILE`, `TI_SIGNER_KEY_FILE`,
`TI_CRL_FILE`; see docs/security.md).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.pki.authority import Authority, cert_pem, key_pem, new_key

SERVER_LIFETIME = dt.timedelta(days=365)
CRL_VALIDITY = dt.timedelta(days=365)
"""The broker refuses every client once the CRL expires: the hub rewrites it daily and on
start, so it only lapses if no hub ran for this long."""


def hub_name(source: str) -> str:
    return f"hub.{source}"


def broker_name(source: str) -> str:
    return f"broker.{source}"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` in one step (a reader never sees half a file), with `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class PkiDir:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_cert(self) -> Path:
        return self.root / "broker.crt"

    @property
    def broker_key(self) -> Path:
        return self.root / "broker.key"

    @property
    def hub_cert(self) -> Path:
        return self.root / "hub.crt"

    @property
    def hub_key(self) -> Path:
        return self.root / "hub.key"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    def exists(self) -> bool:
        return self.ca_cert.exists()


def init_pki(
    root: Path,
    *,
    source: str,
    broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    hub_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
) -> PkiDir:
    """A new CA, the broker's and the hub's certificates and an empty CRL in `root`.
    FileExistsError if `root` already holds a CA: replacing it would orphan every
    certificate it signed."""
    pki = PkiDir(root)
    if pki.exists():
        raise FileExistsError(f"{pki.ca_cert} exists: {root} already holds a CA")
    ca = Authority.create()
    broker_key, hub_key = new_key(), new_key()
    broker = ca.issue(
        broker_key.public_key(),
        broker_name(source),
        lifetime=SERVER_LIFETIME,
        hosts=broker_hosts,
        server=True,
        client=False,
    )
    hub = ca.issue(
        hub_key.public_key(),
        hub_name(source),
        lifetime=SERVER_LIFETIME,
        hosts=hub_hosts,
        server=True,
    )
    root.mkdir(parents=True, exist_ok=True)
    for path, data, mode in (
        (pki.ca_key, key_pem(ca.key), 0o600),
        (pki.broker_key, key_pem(broker_key), 0o600),
        (pki.hub_key, key_pem(hub_key), 0o600),
        (pki.broker_cert, cert_pem(broker), 0o644),
        (pki.hub_cert, cert_pem(hub), 0o644),
        (pki.crl, ca.revocation_list([], CRL_VALIDITY), 0o644),
        (pki.ca_cert, cert_pem(ca.certificate), 0o644),  # last: its presence means done
    ):
        write_atomic(path, data, mode)
    return pki
