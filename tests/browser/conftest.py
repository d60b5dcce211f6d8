"""Browser tests: Playwright (sync API) drives Debian's Chromium against a real stack.

The stack is real processes: a mosquitto broker, a hub (`python -m app hub`) and three sim
agents (`python -m app agent`): dev-1 (env=dev), prod-1 and prod-2 (env=prod).

Write browser tests as plain `def` tests, never `async def`: while the sync Playwright is
alive it marks its own event loop as running in the main thread, so `asyncio.run()` and
pytest-asyncio's loops would fail. That is also why `browser` is module-scoped, not
session-scoped: it is closed (and the thread's running loop cleared) before the next test
module, which may be async, runs.

No `playwright install`: Chromium comes from apt (`/usr/bin/chromium`, installed by `.ci/run`).
Without it the browser tests are skipped, unless the `CI` environment variable is set, in
which case they fail.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from app.broker import Mosquitto, free_port
from tests.harness import ADMIN_TOKEN, AUTH

CHROMIUM = "/usr/bin/chromium"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "screenshots"
HERE = Path(__file__).resolve().parent

CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in CI
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # small /dev/shm in containers crashes renderers
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}

KINDS = "v1/Node,v1/ConfigMap,v1/Service,apps/v1/Deployment,v1/Pod"
AGENTS: dict[str, dict[str, str]] = {
    "dev-1": {"env": "dev"},
    "prod-1": {"env": "prod"},
    "prod-2": {"env": "prod"},
}
SIM_OBJECTS = 60
SIM_CHURN = 2


# --------------------------------------------------------------------------- collection


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/browser `browser`; skip them without Chromium unless CI."""
    missing = not os.path.exists(CHROMIUM)
    skip = pytest.mark.skip(
        reason=f"{CHROMIUM} is missing (apt-get install chromium, or run .ci/run); "
        "set CI=1 to make this a failure"
    )
    for item in items:
        if HERE not in Path(str(item.path)).resolve().parents:
            continue
        item.add_marker(pytest.mark.browser)
        function = getattr(item, "function", None)
        if function is not None and inspect.iscoroutinefunction(function):
            raise pytest.UsageError(
                f"{item.nodeid}: browser tests must be plain `def` tests (sync Playwright)"
            )
        if missing and not os.environ.get("CI"):
            item.add_marker(skip)


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not os.path.exists(CHROMIUM):  # only reached with CI set: see collection above
        pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it with apt-get")
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless Chromium 'new' mode from apt, with a fresh throwaway profile (Playwright's
    `launch` makes a temporary user data dir and removes it on close)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
    )
    yield browser
    browser.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console `error` messages of this test's `page`, as they come (a live list)."""
    return []


@pytest.fixture
def anonymous_page(browser: Browser, console_errors: list[str]) -> Iterator[Page]:
    """A page in a context of its own (fresh cookies and storage), 1440x900, 10 s default
    timeout, not signed in. Uncaught JavaScript errors on the page fail the test at
    teardown."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(f"{exc.name}: {exc.message}"))
    page.on("console", lambda msg: _console(console_errors, msg))
    yield page
    context.close()
    if page_errors:
        pytest.fail("uncaught JavaScript errors on the page:\n" + "\n".join(page_errors))


@pytest.fixture
def page(anonymous_page: Page, stack: Stack) -> Page:
    """`anonymous_page`, signed in to the stack's hub with its admin token."""
    sign_in(anonymous_page, stack, ADMIN_TOKEN)
    return anonymous_page


def sign_in(page: Page, stack: Stack, token: str) -> None:
    """Through the sign-in form, as a person would."""
    page.goto(stack.base_url + "/login")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(stack.base_url + "/")


def _console(into: list[str], msg: ConsoleMessage) -> None:
    if msg.type == "error":
        into.append(msg.text)


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where screenshots go: test-output/screenshots/ at the repo root (gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


# --------------------------------------------------------------------------- stack


def eventually(predicate: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    """Poll a sync predicate until it returns something truthy (returned); fail after
    `within` seconds. For page content prefer Playwright's `expect(...)`, which waits too."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Stack:
    """A broker, a hub and sim agents as OS processes; logs in `log_dir`."""

    log_dir: Path
    broker: Mosquitto
    port: int = field(default_factory=free_port)
    hub: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP ---------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """GET a JSON path of the hub's API; raises on a non-2xx answer."""
        response = httpx.get(f"{self.base_url}{path}", params=params, timeout=5, headers=AUTH)
        response.raise_for_status()
        return response.json()

    def clusters(self) -> dict[str, dict[str, Any]]:
        """name -> the cluster's JSON from GET /clusters."""
        return {c["name"]: c for c in self.get("/clusters")["items"]}

    def online(self, name: str) -> bool | None:
        """The hub's view of a cluster: True/False, None if it does not know it."""
        found = self.clusters().get(name)
        return None if found is None else bool(found["online"])

    def wait_online(self, name: str, online: bool = True, within: float = 15.0) -> None:
        eventually(
            lambda: self.online(name) is online,
            within,
            f"{name} {'online' if online else 'offline'}",
        )

    # -- processes ----------------------------------------------------------------------

    def _start(self, log_name: str, *args: str, env: dict[str, str] | None = None) -> Any:
        with open(self.log_dir / f"{log_name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TI_LOG_LEVEL": "INFO", **(env or {})},
                cwd=REPO_ROOT,
            )
        self._procs.append(proc)
        return proc

    def _check_alive(self, proc: subprocess.Popen[bytes], log_name: str) -> None:
        if proc.poll() is not None:
            log = (self.log_dir / f"{log_name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{log_name} exited with {proc.returncode}:\n{log}")

    def start_hub(self) -> None:
        self.hub = self._start(
            "hub",
            "hub",
            "--broker",
            self.broker.url,
            "--database-url",
            f"sqlite:///{self.log_dir}/hub.db",
            "--port",
            str(self.port),
            "--replica-id",
            "hub-ui",
            # notice silent clusters quickly (a SIGKILLed agent also sends its last will)
            env={"TI_MAINTENANCE_INTERVAL_S": "0.5", "TI_BOOTSTRAP_TOKEN": ADMIN_TOKEN},
        )
        hub = self.hub

        def ready() -> bool:
            self._check_alive(hub, "hub")
            try:
                return httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, 30, "hub /readyz")

    def start_agent(self, name: str, *, wait: bool = True) -> None:
        """(Re)start the sim agent of cluster `name` (same labels and seed as at first)."""
        if name in self.agents and self.agents[name].poll() is None:
            raise RuntimeError(f"agent {name} is already running")
        labels = ",".join(f"{k}={v}" for k, v in AGENTS[name].items())
        self.agents[name] = self._start(
            f"agent-{name}",
            "agent",
            "--broker",
            self.broker.url,
            "--cluster",
            name,
            "--labels",
            labels,
            "--source-kind",
            "sim",
            "--sim-objects",
            str(SIM_OBJECTS),
            "--sim-churn",
            str(SIM_CHURN),
            "--sim-seed",
            str(sorted(AGENTS).index(name) + 1),
            "--kinds",
            KINDS,
            "--heartbeat",
            "1",
            "--resync",
            "5",
        )
        if wait:
            self.wait_online(name, True, within=30)

    def kill_agent(self, name: str, *, wait: bool = True) -> None:
        """SIGKILL the agent of `name` (no goodbye: the broker sends its last will);
        with `wait`, return once the hub shows the cluster offline."""
        self._signal_agent(name, signal.SIGKILL)
        if wait:
            self.wait_online(name, False)

    def stop_agent(self, name: str, *, wait: bool = True) -> None:
        """SIGTERM the agent of `name`: it shuts down cleanly (says goodbye)."""
        self._signal_agent(name, signal.SIGTERM)
        if wait:
            self.wait_online(name, False)

    def _signal_agent(self, name: str, sig: signal.Signals) -> None:
        proc = self.agents[name]
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def all_online(self) -> bool:
        clusters = self.clusters()
        return all(
            name in clusters and clusters[name]["online"] and clusters[name]["counts"]
            for name in AGENTS
        )

    def start(self) -> None:
        self.start_hub()
        for name in AGENTS:
            self.start_agent(name, wait=False)

        def up() -> bool:
            for name, proc in self.agents.items():
                self._check_alive(proc, f"agent-{name}")
            return self.all_online()

        eventually(up, 30, f"clusters {', '.join(AGENTS)} online")

    def stop(self) -> None:
        """Agents first, then the hub: terminate, wait, kill what does not exit."""
        procs = [p for p in self._procs if p is not self.hub] + ([self.hub] if self.hub else [])
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running broker + hub + dev-1/prod-1/prod-2 sim agents, all online, shared by the
    tests of a module. A test that kills or stops an agent should start it again
    (`stack.start_agent(name)`) so later tests see all three online."""
    log_dir = tmp_path_factory.mktemp("stack")
    with Mosquitto(data_dir=log_dir / "mosquitto") as broker:
        running = Stack(log_dir=log_dir, broker=broker)
        try:
            running.start()
            yield running
        finally:
            running.stop()
