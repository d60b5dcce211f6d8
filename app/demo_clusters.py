"""The demo's clusters in the secure setup: registered once, joined once, reused after.

A cluster needs a (new) join token when its state directory holds no identity, or one that
has expired, was issued by another CA (the PKI was made anew), or is not the certificate
the database knows for it (the database was reset, or the cluster removed). Then its state
directory is emptied and a token is written to `data/tokens/<name>`, 0600, for
`--token-file`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from app.config import parse_labels
from app.hub.cluster_admin import add_cluster
from app.pki.authority import Authority, cert_pem, key_pem, new_key, serial_hex
from app.pki.layout import write_atomic
from app.store import registrations as store
from app.store.db import create_engine
from app.store.migrate import upgrade_async


def _usable(state_dir: Path, ca: bytes, serial: str | None) -> bool:
    identity, state_ca = state_dir / "identity.pem", state_dir / "ca.pem"
    if serial is None or not identity.exists() or not state_ca.exists():
        return False
    if state_ca.read_bytes() != ca:
        return False
    certs = x509.load_pem_x509_certificates(identity.read_bytes())
    return (
        bool(certs)
        and serial_hex(certs[0]) == serial
        and (certs[0].not_valid_after_utc.timestamp() > time.time() + 60)
    )


async def prepare_clusters(
    database_url: str,
    pki_dir: Path,
    hub_url: str,
    clusters: Sequence[tuple[str, str]],
    agents_dir: Path,
) -> dict[str, Path | None]:
    """Per cluster, the token file to join with, or None to reuse its identity."""
    await upgrade_async(database_url)
    ca = (pki_dir / "ca.crt").read_bytes()
    engine = create_engine(database_url)
    joins: dict[str, Path | None] = {}
    try:
        known = {r.name: r for r in await store.list_registrations(engine, time.time())}
        for name, label_text in clusters:
            state_dir = agents_dir / name
            token_file = agents_dir.parent / "tokens" / name
            token_file.unlink(missing_ok=True)
            registration = known.get(name)
            serial = (
                registration.certificate.serial
                if registration and registration.certificate
                else None
            )
            if registration is not None and _usable(state_dir, ca, serial):
                joins[name] = None
                continue
            shutil.rmtree(state_dir, ignore_errors=True)
            ticket = await add_cluster(
                engine,
                name,
                parse_labels(label_text),
                ca_bundle=ca,
                hub_url=hub_url,
                token_ttl_s=600,
                new_token_only=registration is not None,
                state_dir=str(state_dir),
            )
            write_atomic(token_file, ticket.token.encode() + b"\n", 0o600)
            joins[name] = token_file
    finally:
        await engine.dispose()
    return joins


def visitor_identity(pki_dir: Path) -> Path:
    """A key and certificate (CN `visitor`) from the demo's CA that belong to no cluster,
    for trying the broker's rules with mosquitto_sub: it may connect, and reads nothing."""
    path = pki_dir / "visitor.pem"
    if path.exists():
        certs = x509.load_pem_x509_certificates(path.read_bytes())
        if certs and certs[0].not_valid_after_utc.timestamp() > time.time() + 3600:
            return path
    authority = Authority.load(pki_dir / "ca.crt", pki_dir / "ca.key")
    key = new_key()
    cert = authority.issue(key.public_key(), "visitor", lifetime=dt.timedelta(days=30))
    write_atomic(path, key_pem(key) + cert_pem(cert), 0o600)
    return path
