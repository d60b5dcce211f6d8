"""`transport-informer demo` as a user runs it: Ctrl-C in its terminal stops everything in
order, quietly, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx
import pytest

from app.broker import free_port

pytestmark = pytest.mark.e2e


class Lines:
    """Every line a process writes to one pipe, read by a thread (the pipe never fills)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


def children_of(pid: int) -> dict[int, bytes]:
    """The direct children of `pid`, by PID, with their command lines (from /proc)."""
    found: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def running(pid: int, cmdline: bytes) -> bool:
    """The process is alive (not a zombie) and still the one we saw (not a reused PID)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline
    except OSError:
        return False


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def demo_token(lines: list[str]) -> str:
    """The admin token the demo prints (`export TI_TOKEN=...`)."""
    return next(line.split("=", 1)[1] for line in lines if "export TI_TOKEN=" in line)


def three_clusters_online(url: str, verify: ssl.SSLContext | bool, token: str) -> bool:
    try:
        headers = {"Authorization": f"Bearer {token}"}
        items = httpx.get(url, timeout=2, verify=verify, headers=headers).json()["items"]
    except (httpx.HTTPError, KeyError, ValueError):
        return False
    return len(items) == 3 and all(c.get("online") for c in items)


def ctrl_c(demo: subprocess.Popen[bytes]) -> None:
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal does: its whole foreground group


def terminal_closed(demo: subprocess.Popen[bytes]) -> None:
    os.killpg(demo.pid, signal.SIGHUP)


def sigterm(demo: subprocess.Popen[bytes]) -> None:
    demo.terminate()  # a service manager, or `kill`


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("interrupt", "secure"),
    [(ctrl_c, True), (terminal_closed, True), (sigterm, True), (ctrl_c, False)],
    ids=["ctrl_c", "terminal_closed", "sigterm", "ctrl_c-insecure"],
)
def test_an_interrupted_demo_stops_agents_then_hub_then_broker_and_leaves_nothing(
    tmp_path: Path, interrupt: Callable[[subprocess.Popen[bytes]], None], secure: bool
) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--port", str(port)]
        + ([] if secure else ["--insecure"]),
        cwd=tmp_path,  # the demo writes ./data
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert demo.stdout is not None
    output = Lines(demo.stdout)
    children: dict[int, bytes] = {}
    try:
        scheme = "https" if secure else "http"
        url = f"{scheme}://127.0.0.1:{port}/clusters"
        wait_for(lambda: any(url in line for line in output.lines), 120, "the dashboard URL")
        verify: ssl.SSLContext | bool = True
        if secure:
            # the secure demo says where its PKI and broker are, and trusts only its own CA
            pki = tmp_path / "data" / "pki"
            assert any("PKI: data/pki/" in line for line in output.lines), output.lines
            assert any("broker: mqtts://127.0.0.1:" in line for line in output.lines)
            verify = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        else:
            warnings = [line for line in output.lines if "insecure mode" in line]
            assert len(warnings) == 1, output.lines
        health = httpx.get(f"{scheme}://127.0.0.1:{port}/healthz", timeout=5, verify=verify)
        assert health.status_code == 200
        token = demo_token(output.lines)
        sign_in = next(line.strip() for line in output.lines if "/login?token=" in line)
        signed_in = httpx.get(sign_in, timeout=5, follow_redirects=False, verify=verify)
        assert signed_in.status_code == 303 and "ti_session" in signed_in.cookies
        assert httpx.get(sign_in, timeout=5, verify=verify).status_code == 401  # works once
        wait_for(lambda: three_clusters_online(url, verify, token), 60, "three agents online")
        if secure:  # each joined with its token, and keeps its key and certificate here
            agents = tmp_path / "data" / "agents"
            assert sorted(p.name for p in agents.iterdir()) == ["dev-1", "prod-1", "prod-2"]
            assert all((agents / name / "identity.pem").exists() for name in ("dev-1", "prod-1"))
        children = children_of(demo.pid)
        assert len(children) == 5, children  # mosquitto, the hub, three agents
        before_ctrl_c = len(output.lines)

        interrupt(demo)
        assert demo.wait(60) == 0
        output.join(10)
        after = output.lines[before_ctrl_c:]
        stopped = [line for line in after if line.startswith("stopped ")]
        assert stopped == [
            "stopped agent dev-1",
            "stopped agent prod-1",
            "stopped agent prod-2",
            "stopped hub",
            "stopped broker",
        ], "\n".join(after)
        noise = ("lost MQTT connection", "cannot reach MQTT broker", "reconnect", "Traceback")
        assert not [line for line in after if any(n in line for n in noise)], "\n".join(after)
        assert not [pid for pid, cmd in children.items() if running(pid, cmd)]
    finally:
        # children hold the demo's stdout: left running, they would keep the reader (and
        # the close below) waiting forever
        children = children or children_of(demo.pid)
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        for pid, cmdline in children.items():
            if running(pid, cmdline):
                os.kill(pid, signal.SIGKILL)
        output.join(5)
        demo.stdout.close()
