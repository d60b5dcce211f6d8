"""The fault harness's own parts: the TCP proxy, the oracle, the SSE checker, processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.oracle import Diff, compare
from tests.faults.processes import ManagedProcess
from tests.faults.sse_check import SseChecker
from tests.faults.tcp_proxy import TcpProxy


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def roundtrip(port: int, payload: bytes, timeout_s: float = 1.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_proxy_forwards_stalls_drops_and_resumes() -> None:
    async with echo_server() as port, TcpProxy(port) as proxy:
        assert await roundtrip(proxy.port, b"hello") == b"hello"

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.stall()
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.readexactly(4)
        proxy.resume()
        async with asyncio.timeout(2):
            assert await reader.readexactly(4) == b"held"  # the same socket, still open

        proxy.drop()
        async with asyncio.timeout(2):
            assert await reader.read() == b""  # closed by the drop
        writer.close()
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await roundtrip(proxy.port, b"refused")
        proxy.resume()
        assert await roundtrip(proxy.port, b"again") == b"again"


async def test_throttled_proxy_delivers_at_its_rate() -> None:
    async with echo_server() as port, TcpProxy(port) as proxy:
        proxy.throttle(40_000)
        started = asyncio.get_running_loop().time()
        assert await roundtrip(proxy.port, b"x" * 8192, timeout_s=5) == b"x" * 8192
        assert asyncio.get_running_loop().time() - started >= 0.2  # 8 KiB each way


def test_oracle_sorts_differences_into_their_categories() -> None:
    truth = {
        ("v1/Pod", "a", "kept"): ("u1", 10),
        ("v1/Pod", "a", "lost"): ("u2", 11),
        ("v1/Pod", "a", "older"): ("u3", 20),
        ("v1/Pod", "a", "newer"): ("u4", 5),
        ("v1/Pod", "a", "recreated"): ("u5-new", 7),
    }
    hub = {
        ("v1/Pod", "a", "kept"): ("u1", 10),
        ("v1/Pod", "a", "older"): ("u3", 15),
        ("v1/Pod", "a", "newer"): ("u4", 9),
        ("v1/Pod", "a", "recreated"): ("u5-old", 900),
        ("v1/Pod", "a", "phantom"): ("u6", 3),
    }
    diff = Diff()

    compare(diff, "c", truth, hub)

    assert diff.counts() == {
        "lost": 1,
        "stale_older": 1,
        "stale_newer": 2,
        "phantom": 1,
        "other_uid": 1,
    }
    assert not diff.empty


def test_sse_checker_counts_gaps_duplicates_and_resets() -> None:
    checker = SseChecker("http://unused", retain_changes=100)
    on = checker._on_event
    on({"event": "BOOKMARK", "id": "10"}, asked=None)
    for revision in (11, 12, 12, 15, 16):
        on({"event": "MODIFIED", "id": str(revision)}, asked=None)
    on({"event": "CLUSTER", "data": "{}"}, asked=None)  # no id: not a change
    on({"event": "RESET", "data": '{"resourceVersion": "30"}'}, asked=16)
    on({"event": "RESET", "data": '{"resourceVersion": "500"}'}, asked=31)

    report = checker.report
    assert (report.gaps, report.missing, report.duplicates) == (1, 2, 1)
    assert (report.resets, report.undue_resets) == (2, 1)
    assert report.last == 500
    assert not report.clean


def test_managed_process_reports_how_it_ended(tmp_path: Path) -> None:
    sleeper = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "s"
    )
    sleeper.start()
    assert sleeper.alive and sleeper.usage() is not None
    sleeper.signal(signal.SIGKILL)
    sleeper._proc.wait(5)  # type: ignore[union-attr]
    assert sleeper.exit_status == "killed by SIGKILL"
    sleeper.start()
    sleeper.stop()
    assert sleeper.incarnations == 2 and not sleeper.alive
