"""End to end with real processes: broker, hub and agents as separate OS processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.agent.sources.sim import SimulatedCluster
from app.broker import Mosquitto, free_port
from tests.conftest import wait_until
from tests.harness import ADMIN_TOKEN, AUTH, KINDS, sim_agent, sim_names

pytestmark = pytest.mark.e2e
KIND_FLAG = ",".join(str(k) for k in KINDS)


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "TI_LOG_LEVEL": "INFO", "TI_BOOTSTRAP_TOKEN": ADMIN_TOKEN}
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app", *args], stdout=log, stderr=log, env=env
            )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def start_hub(
    processes: Processes, broker: Mosquitto, db: str, port: int
) -> subprocess.Popen[bytes]:
    return processes.start(
        "hub",
        "hub",
        "--broker",
        broker.url,
        "--database-url",
        db,
        "--port",
        str(port),
        "--replica-id",
        "hub-e2e",
    )


def start_agent(processes: Processes, broker: Mosquitto, cluster: str, seed: int) -> Any:
    return processes.start(
        f"agent-{cluster}",
        "agent",
        "--broker",
        broker.url,
        "--cluster",
        cluster,
        "--labels",
        "env=prod",
        "--source-kind",
        "sim",
        "--sim-objects",
        "40",
        "--sim-churn",
        "0",
        "--sim-seed",
        str(seed),
        "--kinds",
        KIND_FLAG,
        "--heartbeat",
        "0.5",
        "--resync",
        "1",
    )


async def hub_up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def hub_names(http: httpx.AsyncClient, cluster: str) -> dict[tuple[str, str], str]:
    try:
        response = await http.get(f"/clusters/{cluster}/resources", params={"limit": 1000})
    except httpx.TransportError:
        return {}
    if response.status_code != 200:
        return {}
    return {
        (i["kind"], f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}"): i["metadata"][
            "resourceVersion"
        ]
        for i in response.json()["items"]
    }


async def online(http: httpx.AsyncClient, cluster: str) -> bool | None:
    try:
        response = await http.get(f"/clusters/{cluster}")
    except httpx.TransportError:
        return None
    return response.json()["online"] if response.status_code == 200 else None


async def test_killed_agent_goes_offline_and_its_replacement_makes_the_hub_exact(
    broker: Mosquitto, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    start_hub(processes, broker, f"sqlite:///{tmp_path}/hub.db", port)
    first = start_agent(processes, broker, "prod-1", seed=1)
    expected_first = await sim_names(
        SimulatedCluster(cluster="prod-1", objects=40, churn_per_s=0, seed=1, kinds=KINDS)
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=5, headers=AUTH
    ) as http:
        await wait_until(
            lambda: _equal(hub_names(http, "prod-1"), expected_first),
            within=30,
            what="first agent synced",
        )
        first.send_signal(signal.SIGKILL)
        first.wait()
        await wait_until(lambda: _is(online(http, "prod-1"), False), what="offline after SIGKILL")
        # the replacement's cluster lost every object the first one had, and has new ones
        start_agent(processes, broker, "prod-1", seed=2)
        expected = await sim_names(
            SimulatedCluster(cluster="prod-1", objects=40, churn_per_s=0, seed=2, kinds=KINDS)
        )
        await wait_until(
            lambda: _equal(hub_names(http, "prod-1"), expected),
            within=30,
            what="deletes made while down are gone",
        )
        assert await online(http, "prod-1") is True


async def _equal(got: Any, expected: Any) -> bool:
    """Both sides are coroutines (or the second a plain value) of name -> resourceVersion."""
    if asyncio.iscoroutine(expected):
        expected = await expected
    return bool(await got == expected)


async def _is(got: Any, expected: Any) -> bool:
    return bool(await got is expected)


async def test_hub_killed_mid_stream_loses_nothing(
    broker: Mosquitto, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path}/hub.db"
    hub = start_hub(processes, broker, db, port)
    agent, sim = sim_agent("prod-2", broker.url, resync_s=3600.0)  # only sessions, no resync help
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=5, headers=AUTH
    ) as http:
        await wait_until(lambda: hub_up(http), within=30, what="hub ready")
        await agent.__aenter__()
        await wait_until(lambda: _equal(hub_names(http, "prod-2"), sim_names(sim)), within=30)
        for round_ in range(30):
            sim.mutate(10)
            if round_ == 10:
                hub.send_signal(signal.SIGKILL)
                hub.wait()
            if round_ == 20:
                hub = start_hub(processes, broker, db, port)
            await asyncio.sleep(0.05)
        try:
            await wait_until(
                lambda: _equal(hub_names(http, "prod-2"), sim_names(sim)),
                within=30,
                what="hub caught up after its restart",
            )
        finally:
            await agent.__aexit__(None, None, None)


async def test_broker_restarted_mid_stream_loses_nothing(
    broker: Mosquitto, processes: Processes, tmp_path: Path
) -> None:
    port = free_port()
    start_hub(processes, broker, f"sqlite:///{tmp_path}/hub.db", port)
    agent, sim = sim_agent("prod-3", broker.url)
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5, headers=AUTH) as http,
        agent,
    ):
        await wait_until(lambda: _equal(hub_names(http, "prod-3"), sim_names(sim)), within=30)
        for round_ in range(30):
            sim.mutate(10)
            if round_ == 10:
                broker.stop()
            if round_ == 20:
                broker.start()
            await asyncio.sleep(0.05)
        await wait_until(
            lambda: _equal(hub_names(http, "prod-3"), sim_names(sim)),
            within=30,
            what="caught up after the broker restart",
        )


def test_cli_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "app", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("hub", "agent", "demo", "db"):
        assert command in out
    for args in (
        ["hub", "--help"],
        ["agent", "--help"],
        ["demo", "--help"],
        ["db", "upgrade", "--help"],
    ):
        subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, check=True)


def test_db_upgrade_command_migrates(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/x.db"
    result = subprocess.run(
        [sys.executable, "-m", "app", "db", "upgrade", "--database-url", db],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "latest schema" in result.stdout


def test_compose_file_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        ["docker-compose", "-f", str(root / "compose.yaml"), "config", "-q"], check=True, cwd=root
    )
