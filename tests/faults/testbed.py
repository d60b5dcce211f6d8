"""One matrix row's world: a broker, a hub, fake API servers with churn, and agents.

- mosquitto (`FaultyBroker`) on a free port, persistence in the row's directory;
- the hub as its own process (`python -m app hub`), on SQLite in the row's directory or on a
  private PostgreSQL database; optionally with a private Redis behind a `TcpProxy`;
- per cluster, a `FakeKubeApi` in this process with a seeded `Churn`, and an agent process
  on the kubernetes source (`--kubeconfig` pointing at that server); agent 0 optionally
  reaches the broker through a `TcpProxy`;
- an HTTP client on the hub.
Everything started is stopped and waited for on exit, in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import orjson

from app.broker import free_port
from tests.agent.fake_kube_api import FakeKubeApi
from tests.agent.fake_kube_truth import Truth
from tests.faults import oracle
from tests.faults.brokers import FaultyBroker
from tests.faults.churn import KINDS_FLAG, Churn
from tests.faults.postgres import database_url, private_database
from tests.faults.processes import ManagedProcess, Usage
from tests.faults.redis_server import RedisServer
from tests.faults.tcp_proxy import TcpProxy
from tests.harness import ADMIN_TOKEN, AUTH

START_TIMEOUT_S = 60.0


STUCK_AFTER_S = 2.0
"""The hub's `stuck_after_s` in the matrix: short, so /readyz is judged within a fault."""


@dataclass(frozen=True)
class BedParams:
    """Sizes and periods of one row (defaults: the full matrix on a 2-core machine)."""

    clusters: int = 3
    objects: int = 3000
    """Per cluster."""
    rate: float = 150.0
    """Changes per second, over all clusters."""
    heartbeat_s: float = 1.0
    resync_s: float = 10.0
    margin_s: float = 30.0
    """Convergence deadline = resync period (+20% jitter) + this margin."""
    warm_s: float = 3.0
    """Churn before the fault."""
    fault_s: float = 8.0
    after_s: float = 3.0
    """Churn after the fault is healed."""
    seed: int = 8
    retain_changes: int = 200_000
    sync_timeout_s: float = 120.0

    @property
    def deadline_s(self) -> float:
        return self.resync_s * 1.2 + self.margin_s


QUICK = BedParams(
    objects=1000, rate=60.0, resync_s=4.0, margin_s=16.0, warm_s=2.0, fault_s=4.0, after_s=2.0
)
"""The sizes `make test` runs its subset at (test_matrix.py); `bench/faults.py --quick`."""


@dataclass(frozen=True)
class Needs:
    database: str = "sqlite"
    redis: bool = False
    agent_proxy: bool = False


def kubeconfig(server: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": server}}],
            "users": [{"name": "agent", "user": {"token": "faults"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "agent"}}],
            "current-context": "fake",
        }
    )


class Testbed:
    def __init__(self, params: BedParams, needs: Needs, work_dir: Path) -> None:
        self.params = params
        self.needs = needs
        self.work_dir = work_dir
        self.clusters = [f"faults-{i}" for i in range(params.clusters)]
        self.apis: list[FakeKubeApi] = []
        self.churns: list[Churn] = []
        self.agents: list[ManagedProcess] = []
        self.database = ""
        """The PostgreSQL database's name, or the SQLite file's path."""
        self.database_url = ""
        self.broker = FaultyBroker(data_dir=work_dir / "mosquitto")
        self.redis_proxy: TcpProxy | None = None
        self.agent_proxy: TcpProxy | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10, headers=AUTH)
        self.hub: ManagedProcess
        self._stack = AsyncExitStack()
        self._churning: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Testbed:
        await self._stack.__aenter__()
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_churn()
        await self._stack.aclose()

    async def _start(self) -> None:
        stack, params = self._stack, self.params
        self.work_dir.mkdir(parents=True, exist_ok=True)
        stack.push_async_callback(self.http.aclose)
        if self.needs.database == "postgresql":
            self.database = await stack.enter_async_context(private_database())
            self.database_url = database_url(self.database)
        else:
            self.database = str(self.work_dir / "hub.db")
            self.database_url = f"sqlite:///{self.database}"
        await asyncio.to_thread(self.broker.start)
        stack.callback(self.broker.stop)
        redis_args: list[str] = []
        if self.needs.redis:
            redis = await stack.enter_async_context(RedisServer(self.work_dir / "redis"))
            self.redis_proxy = await stack.enter_async_context(TcpProxy(redis.port))
            redis_args = ["--redis-url", f"redis://127.0.0.1:{self.redis_proxy.port}/0"]
        for i, cluster in enumerate(self.clusters):
            api = await stack.enter_async_context(FakeKubeApi.serving())
            churn = Churn(
                api,
                objects=params.objects,
                rate=params.rate / params.clusters,
                seed=params.seed + i,
            )
            churn.populate()
            self.apis.append(api)
            self.churns.append(churn)
            (self.work_dir / f"kubeconfig-{cluster}").write_bytes(kubeconfig(api.url))
        self.hub = ManagedProcess.app(
            "hub",
            "hub",
            *("--broker", self.broker.url, "--database-url", self.database_url),
            *("--port", str(self.port), "--replica-id", "faults", *redis_args),
            log_dir=self.work_dir,
            TI_LOG_LEVEL="INFO",
            TI_BOOTSTRAP_TOKEN=ADMIN_TOKEN,
            TI_MAINTENANCE_INTERVAL_S="1",
            TI_STUCK_AFTER_S=str(STUCK_AFTER_S),
            TI_RETAIN_CHANGES=str(params.retain_changes),
        )
        stack.push_async_callback(self._stop, self.hub)
        self.hub.start()
        await self.wait_hub()
        if self.needs.agent_proxy:
            self.agent_proxy = await stack.enter_async_context(TcpProxy(self.broker.port))
        for i, cluster in enumerate(self.clusters):
            broker = self.broker.url
            if i == 0 and self.agent_proxy is not None:
                broker = f"mqtt://127.0.0.1:{self.agent_proxy.port}"
            agent = ManagedProcess.app(
                f"agent-{cluster}",
                "agent",
                *("--broker", broker, "--cluster", cluster, "--labels", "env=faults"),
                *("--source-kind", "kubernetes", "--kinds", KINDS_FLAG),
                *("--kubeconfig", str(self.work_dir / f"kubeconfig-{cluster}")),
                *("--heartbeat", str(params.heartbeat_s), "--resync", str(params.resync_s)),
                log_dir=self.work_dir,
                TI_LOG_LEVEL="INFO",
            )
            stack.push_async_callback(self._stop, agent)
            agent.start()
            self.agents.append(agent)

    @staticmethod
    async def _stop(process: ManagedProcess) -> None:
        await asyncio.to_thread(process.stop)

    async def wait_hub(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the hub answers HTTP (it may not be ready: a fault may still hold)."""
        async with asyncio.timeout(timeout_s):
            while True:
                if not self.hub.alive:
                    raise RuntimeError(f"the hub exited: see {self.hub.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await self.http.get("/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)

    async def ingested_events(self) -> int:
        """`ti_ingest_events_total` of the running hub (0 if it does not answer)."""
        with contextlib.suppress(httpx.HTTPError):
            text = (await self.http.get("/metrics")).text
            for line in text.splitlines():
                if line.startswith("ti_ingest_events_total "):
                    return int(float(line.split()[1]))
        return 0

    async def truths(self) -> Mapping[str, Truth]:
        return {cluster: api.truth() for cluster, api in zip(self.clusters, self.apis, strict=True)}

    async def converge(self, deadline_s: float) -> oracle.Convergence:
        return await oracle.converge(self.http, self.truths, deadline_s=deadline_s)

    def start_churn(self) -> None:
        self._churning = [asyncio.create_task(churn.run()) for churn in self.churns]

    async def stop_churn(self) -> None:
        """Stop churn; raise what ended a churn task early (the row would be misjudged)."""
        failed = [t.exception() for t in self._churning if t.done() and not t.cancelled()]
        for task in self._churning:
            task.cancel()
        await asyncio.gather(*self._churning, return_exceptions=True)
        self._churning = []
        for exc in failed:
            if exc is not None:
                raise RuntimeError("churn stopped by itself") from exc

    def usage(self) -> dict[str, tuple[int, Usage | None]]:
        """(incarnation, usage) of the hub and every agent."""
        return {p.name: (p.incarnations, p.usage()) for p in [self.hub, *self.agents]}

    @contextlib.asynccontextmanager
    async def agent_stopped(self, index: int, *, kill: bool) -> AsyncIterator[ManagedProcess]:
        """Agent `index` down (SIGKILL or SIGTERM) for the block, started again after."""
        agent = self.agents[index]
        if kill:
            agent.kill()
        else:
            await asyncio.to_thread(agent.stop)
        try:
            yield agent
        finally:
            agent.start()
