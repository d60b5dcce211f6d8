"""`transport-informer demo`: a local broker, a hub and three simulated clusters.

Every process is a child of this one, started in a session of its own, so a terminal's
Ctrl-C (SIGINT to the whole foreground process group) reaches only the demo. The demo then
stops them in order (`stop_in_order`): the agents first, so they say goodbye while the
broker is still up, then the hub, then the broker; one line each, and SIGKILL for any part
still running `STOP_TIMEOUT_S` after its SIGTERM.

Every way out of `run` goes through that: Ctrl-C, SIGTERM, SIGHUP (the terminal closed:
the children, in their own sessions, no longer get its SIGHUP), a part exiting by itself,
an error while starting. Only a SIGKILL of the demo itself leaves its children running.

By default the demo is the secure setup (docs/security.md): a PKI in `data/pki`, mosquitto
with the shipped TLS configuration and ACLs, the hub on HTTPS, and each cluster registered
and joined with a one-time token, its key and certificate in `data/agents/<name>`. A
restarted demo reuses them; a cluster whose identity is missing, expired or no longer
registered is given a new token. `--insecure` is the old plain mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO

from app.access.tokens import SIGN_IN_LINK_TTL_S
from app.broker import Mosquitto, free_port

CLUSTERS = (
    ("dev-1", "env=dev,region=eu"),
    ("prod-1", "env=prod,region=eu"),
    ("prod-2", "env=prod,region=us"),
)
STOP_TIMEOUT_S = 10.0
"""How long a part has between SIGTERM and SIGKILL (agents say goodbye within 3 s, the hub
shuts down within 3 s)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One child process of the demo, named as the user reads it: `agent dev-1`, `hub`."""

    name: str
    process: subprocess.Popen[bytes]


class StopRequest:
    """Set by SIGINT, SIGTERM or SIGHUP. Checked between steps rather than raised from the
    handler, so a signal never lands halfway through starting a child, which would leave
    that child running untracked."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def install(self) -> None:
        # SIGINT too where it was inherited as ignored (a shell's background job)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None


def _say(line: str, stream: TextIO | None = None) -> None:
    """Print, even to a terminal that is gone (SIGHUP): stopping must go on regardless."""
    with contextlib.suppress(OSError):
        print(line, file=stream or sys.stdout, flush=True)


def stop_in_order(groups: Sequence[Sequence[Part]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop each group after the one before it: SIGTERM to all of a group at once, then
    wait for each, SIGKILL for any still running `timeout_s` after the SIGTERM. Prints one
    `stopped <name>` line per part, saying so if it had exited already or was killed."""
    for group in groups:
        exited = [part.process.poll() for part in group]
        for part, code in zip(group, exited, strict=True):
            if code is None:
                part.process.terminate()
        deadline = time.monotonic() + timeout_s
        for part, code in zip(group, exited, strict=True):
            note = ""
            if code is not None:
                note = f" (it had exited with code {code})"
            else:
                try:
                    part.process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    part.process.kill()
                    part.process.wait()
                    note = f" (killed: still running {timeout_s:g} s after SIGTERM)"
            _say(f"stopped {part.name}{note}")


def _spawn(*args: str) -> subprocess.Popen[bytes]:
    """`python -m app ARGS` in a session of its own (out of reach of the terminal's Ctrl-C).
    Children log at WARNING unless TI_LOG_LEVEL says otherwise."""
    env = {**os.environ, "TI_LOG_LEVEL": os.environ.get("TI_LOG_LEVEL", "WARNING")}
    return subprocess.Popen([sys.executable, "-m", "app", *args], env=env, start_new_session=True)


def _wait_http(
    url: str,
    timeout_s: float,
    hub: subprocess.Popen[bytes],
    stop: StopRequest,
    context: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stop.requested:
        if hub.poll() is not None:
            _fail("the hub exited during start-up; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except OSError:
            time.sleep(0.2)
    if not stop.requested:
        _fail(f"the hub did not answer on {url}")


def _fail(reason: str) -> NoReturn:
    """Say why before the parts are stopped (their lines follow), then exit with 1."""
    _say(f"{reason}; stopping the rest", sys.stderr)
    raise SystemExit(1)


async def _demo_access(database_url: str) -> tuple[str, str]:
    """A fresh admin token named `demo` (any older one revoked) and a one-time sign-in
    ticket for it, in the demo's database."""
    from app.store import access
    from app.store.db import create_engine

    engine = create_engine(database_url)
    try:
        await access.revoke_token(engine, "demo")
        now = time.time()
        token = await access.create_token(
            engine,
            name="demo",
            role="admin",
            clusters="",
            now=now,
            expires_at=None,
            created_by="demo",
        )
        ticket = await access.create_ticket(engine, "demo", now + SIGN_IN_LINK_TTL_S)
    finally:
        await engine.dispose()
    return token, ticket


def _banner(
    port: int, broker: Mosquitto, database_url: str, pki: Path | None, token: str, ticket: str
) -> None:
    scheme, curl = ("https", f"curl --cacert {pki}/ca.crt") if pki else ("http", "curl")
    base = f"{scheme}://127.0.0.1:{port}"
    minutes = SIGN_IN_LINK_TTL_S // 60
    print(f"\n  Transport Informer is running. Sign in (a one-time link, {minutes} min):")
    print(f"    {base}/login?token={ticket}")
    print("  The demo's admin API token (this demo's database only):")
    print(f"    export TI_TOKEN={token}")
    print(f'    {curl} -H "Authorization: Bearer $TI_TOKEN" {base}/clusters')
    print(f"  API docs: {base}/docs   another sign-in link: transport-informer tokens link demo")
    print(f"  broker: {broker.url}   database: {database_url}")
    if pki:
        print(f"  PKI: {pki}/ (the CA your browser will not know: ca.crt)   agents: {AGENTS}/")
        print(
            f"  try the ACLs: mosquitto_sub -h 127.0.0.1 -p {broker.port} --cafile {pki}/ca.crt "
            f"--cert {pki}/visitor.pem --key {pki}/visitor.pem -t '#' -v   (a certificate of "
            "the CA that is no cluster's: it reads nothing)"
        )
    print("  Ctrl-C stops it all\n", flush=True)


AGENTS = Path("data/agents")


def _joins(database_url: str, pki_dir: Path, hub_url: str) -> dict[str, Path | None]:
    """Register the demo clusters (once) and say, per cluster, the token file it joins with,
    or None when its state dir holds a usable identity."""
    from app.demo_clusters import prepare_clusters

    return asyncio.run(prepare_clusters(database_url, pki_dir, hub_url, CLUSTERS, AGENTS))


def run(
    port: int = 8000, database_url: str = "sqlite:///./data/hub.db", secure: bool = True
) -> None:
    data = Path("data")
    data.mkdir(exist_ok=True)
    stop = StopRequest()
    stop.install()
    pki: Path | None = None
    joins: dict[str, Path | None] = {}
    context: ssl.SSLContext | None = None
    if secure:
        from app.pki.layout import init_pki

        pki = data / "pki"
        if not (pki / "ca.crt").exists():
            shutil.rmtree(pki, ignore_errors=True)
            init_pki(pki, source="transport-informer")
        joins = _joins(database_url, pki, f"https://127.0.0.1:{port}")
        from app.demo_clusters import visitor_identity

        visitor_identity(pki)
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    else:
        _say("insecure mode: plain MQTT and HTTP, and any client can act as any cluster")
    broker = Mosquitto(port=free_port(), data_dir=data / "mosquitto", own_session=True, pki_dir=pki)
    hub: Part | None = None
    agents: list[Part] = []
    try:
        broker.start()
        secure_hub = ["--pki-dir", str(pki), "--broker-pid-file", str(broker.pid_file)]
        hub = Part(
            "hub",
            _spawn(
                "hub",
                "--broker",
                broker.url,
                "--database-url",
                database_url,
                "--port",
                str(port),
                "--replica-id",
                "hub-0",
                *(secure_hub if pki else []),
            ),
        )
        scheme = "https" if pki else "http"
        _wait_http(f"{scheme}://127.0.0.1:{port}/healthz", 60, hub.process, stop, context)
        for name, labels in CLUSTERS:
            if stop.requested:
                break
            identity: list[str] = []
            if pki:
                identity = ["--state-dir", str(AGENTS / name)]
                token_file = joins.get(name)
                if token_file is not None:
                    identity += ["--join", f"https://127.0.0.1:{port}"]
                    identity += ["--token-file", str(token_file)]
            agent = _spawn(
                "agent",
                "--broker",
                broker.url,
                *identity,
                "--cluster",
                name,
                "--labels",
                labels,
                "--source-kind",
                "sim",
                "--sim-objects",
                "300",
                "--sim-churn",
                "3",
            )
            agents.append(Part(f"agent {name}", agent))
        if not stop.requested:
            token, ticket = asyncio.run(_demo_access(database_url))
            _banner(port, broker, database_url, pki, token, ticket)
        parts = [hub, *agents]
        while not stop.requested and all(p.process.poll() is None for p in parts):
            time.sleep(0.2)
        if not stop.requested:
            _fail("a demo process exited")
        _say("\nstopping...", sys.stderr)
    finally:
        broker_part = [Part("broker", broker.process)] if broker.process else []
        stop_in_order([agents, [hub] if hub else [], broker_part])
