"""TLS contexts for mTLS to the broker (and to the hub's HTTPS endpoints)."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    *,
    ca_data: str | None = None,
) -> ssl.SSLContext:
    """Verifies the server against `ca_file` (or `ca_data`, PEM) with hostname checking, and
    presents `cert_file` (+ `key_file`, or the key in the same file) when given.

    The certificate can be swapped later with `load_cert_chain` on the same context: new
    connections use the new one (how an agent renews without rebuilding its MQTT client)."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None, cadata=ca_data
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context
