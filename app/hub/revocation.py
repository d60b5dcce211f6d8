"""Revocation at the broker: the CRL it reads, its reload, and ending a removed cluster's
connection.

mosquitto 2.0 checks client certificates against `crlfile` only when a connection is made,
and re-reads that file on SIGHUP (with `require_certificate`; verified on 2.0.11). A
connection made before keeps going, so removal has three steps:

1. `publish`: write the CRL of every revoked, unexpired certificate (from the store), plus a
   fresh revoked *canary* certificate; send the broker SIGHUP (`pid_file`); then connect
   with the canary until the broker refuses it. That proves the new CRL is in force, rather
   than assuming the signal arrived and the broker reads the file the hub writes.
2. `evict`: connect once as the removed cluster (a certificate the hub signs on the spot,
   never stored) with clean start. The broker binds the client id to the certificate's CN,
   so this takes the cluster's session over: its live connection is closed and its queued
   messages are discarded. Its reconnect then fails the TLS handshake (step 1).
3. Meanwhile the hub refuses anything that still arrives from it (`Registrations`).

Every hub replica may do this for the same removal; each step is idempotent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from app.pki.authority import Authority, Revoked, cert_pem, key_pem, new_key, serial_hex
from app.pki.layout import CRL_VALIDITY, write_atomic
from app.store import registrations as store
from app.transport import probe
from app.transport.mqtt import parse_broker_url
from app.transport.tls import client_context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Probe:
    context: ssl.SSLContext
    serial: str
    not_after: float


CANARY = ".canary"
"""The `cluster` of canary certificates in the store: not a valid cluster name."""
SHORT_LIFETIME = dt.timedelta(minutes=10)
VERIFY_TIMEOUT_S = 5.0


class BrokerRevocation:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        authority: Authority,
        crl_file: Path,
        pid_file: Path | None,
        broker_url: str,
        ca_file: Path,
    ) -> None:
        self._engine = engine
        self._authority = authority
        self._crl_file = crl_file
        self._pid_file = pid_file
        self._host, self._port, _tls = parse_broker_url(broker_url)
        self._ca_file = ca_file
        self._lock = asyncio.Lock()
        self.in_force: bool | None = None
        """Whether the broker refused the last canary (None before the first check)."""

    def _context(self, name: str) -> _Probe:
        """A client context presenting a new short-lived certificate with CN=`name`; its key
        lives only in a temporary file deleted before this returns."""
        key = new_key()
        cert = self._authority.issue(key.public_key(), name, lifetime=SHORT_LIFETIME)
        with tempfile.TemporaryDirectory(prefix="ti-probe-") as tmp:
            path = Path(tmp) / "identity.pem"
            write_atomic(path, key_pem(key) + cert_pem(cert), 0o600)
            return _Probe(
                client_context(self._ca_file, path),
                serial_hex(cert),
                cert.not_valid_after_utc.timestamp(),
            )

    async def publish(self) -> bool:
        """Write the CRL, have the broker reload it, and check that it did."""
        async with self._lock:
            canary = self._context("canary.revocation")
            now = time.time()
            await store.record_revoked(self._engine, canary.serial, CANARY, canary.not_after, now)
            entries = [Revoked(s, at) for s, at in await store.revoked(self._engine, now)]
            crl = self._authority.revocation_list(entries, CRL_VALIDITY)
            await asyncio.to_thread(write_atomic, self._crl_file, crl, 0o644)
            self._reload_broker()
            deadline = time.monotonic() + VERIFY_TIMEOUT_S
            while True:
                answer = await probe.attempt(self._host, self._port, canary.context, timeout_s=2)
                if answer is probe.Answer.REFUSED:
                    self.in_force = True
                    log.info("the broker refuses %d revoked certificates", len(entries) - 1)
                    return True
                if time.monotonic() > deadline:
                    self.in_force = False
                    if answer is probe.Answer.UNREACHABLE:
                        log.error(
                            "wrote the CRL to %s but cannot reach the broker at %s:%d to check "
                            "it took it up (it reads the file when it starts)",
                            self._crl_file,
                            self._host,
                            self._port,
                        )
                        return False
                    log.error(
                        "the broker at %s:%d still accepts a revoked certificate %.0f s after "
                        "the CRL was written to %s: check its crlfile setting and that it is "
                        "reloaded (TI_BROKER_PID_FILE, or SIGHUP it yourself); removed "
                        "clusters can connect until then (the hub still refuses their "
                        "messages)",
                        self._host,
                        self._port,
                        VERIFY_TIMEOUT_S,
                        self._crl_file,
                    )
                    return False
                await asyncio.sleep(0.1)

    def _reload_broker(self) -> None:
        if self._pid_file is None:
            log.warning("no broker pid file (TI_BROKER_PID_FILE): not signalling the broker")
            return
        try:
            pid = int(self._pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError, IndexError) as exc:
            log.error("could not signal the broker (pid file %s): %s", self._pid_file, exc)

    async def evict(self, cluster: str) -> bool:
        """End `cluster`'s connection and session at the broker (a session takeover)."""
        taker = self._context(cluster)
        answer = await probe.attempt(
            self._host, self._port, taker.context, client_id=cluster, timeout_s=5
        )
        taken = answer is probe.Answer.ACCEPTED
        if not taken:
            log.warning("could not take over %s's session at the broker", cluster)
        return taken
