"""`transport-informer demo`: a local broker, a hub and three simulated clusters.

Every process is a child of this one; Ctrl-C (or SIGTERM) stops them all, agents first so
they say goodbye, then the hub, then the broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from app.broker import Mosquitto, free_port

CLUSTERS = (
    ("dev-1", "env=dev,region=eu"),
    ("prod-1", "env=prod,region=eu"),
    ("prod-2", "env=prod,region=us"),
)


def _wait_http(url: str, timeout_s: float, hub: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if hub.poll() is not None:
            raise SystemExit("the hub exited during start-up; see its log above")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the hub did not answer on {url}")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in processes:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(port: int = 8000, database_url: str = "sqlite:///./data/hub.db") -> None:
    data = Path("data")
    data.mkdir(exist_ok=True)
    exe = [sys.executable, "-m", "app"]
    env = {**os.environ, "TI_LOG_LEVEL": os.environ.get("TI_LOG_LEVEL", "WARNING")}
    agents: list[subprocess.Popen[bytes]] = []
    hub: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C, even where SIGINT was inherited as ignored (a shell's background job)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Mosquitto(port=free_port(), data_dir=data / "mosquitto") as broker:
        try:
            hub = subprocess.Popen(
                [
                    *exe,
                    "hub",
                    "--broker",
                    broker.url,
                    "--database-url",
                    database_url,
                    "--port",
                    str(port),
                    "--replica-id",
                    "hub-0",
                ],
                env=env,
            )
            _wait_http(f"http://127.0.0.1:{port}/healthz", 60, hub)
            for name, labels in CLUSTERS:
                agents.append(
                    subprocess.Popen(
                        [
                            *exe,
                            "agent",
                            "--broker",
                            broker.url,
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
                        ],
                        env=env,
                    )
                )
            print(f"\n  Transport Informer is running: http://127.0.0.1:{port}/clusters")
            print(
                f"  API docs: http://127.0.0.1:{port}/docs   "
                f"live changes: curl -N http://127.0.0.1:{port}/stream"
            )
            print(
                f"  broker: {broker.url}   database: {database_url}   Ctrl-C stops it all\n",
                flush=True,
            )
            while all(p.poll() is None for p in [hub, *agents]):
                time.sleep(0.5)
            print("a demo process exited; stopping the rest", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nstopping...", file=sys.stderr)
        finally:
            _stop(agents)
            _stop([hub] if hub else [])
