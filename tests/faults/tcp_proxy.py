"""A TCP proxy on 127.0.0.1 that can cut the path it stands in: the network fault injector.

States:
- forwarding: bytes flow both ways; new connections are connected upstream;
- stalled: nothing is read from either side, but every socket stays open, as behind a
  partition that drops packets silently; new connections are accepted and held;
- dropped: every connection is closed and new ones are closed on accept, as when a peer is
  unreachable and the path resets.
`resume` returns to forwarding; held connections then connect upstream and flow. While
forwarding, `throttle` limits each direction of each connection to a byte rate (a slow link),
so a long transfer can be cut in its middle on purpose; `throttle(None)` lifts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

from app.broker import free_port

CHUNK = 65536
THROTTLED_CHUNK = 4096


class TcpProxy:
    """`async with TcpProxy(port) as proxy:` forwards 127.0.0.1:`proxy.port` to `port`."""

    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.state = "forwarding"
        self.connections = 0
        self.bytes_per_s: float | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._close_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def stall(self) -> None:
        self.state = "stalled"
        self._flowing.clear()

    def drop(self) -> None:
        self.state = "dropped"
        self._flowing.clear()
        self._close_all()

    def throttle(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s

    def resume(self) -> None:
        self.state = "forwarding"
        self._flowing.set()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state == "dropped":
            writer.close()
            return
        self._writers.add(writer)
        try:
            await self._flowing.wait()
            if writer.is_closing():
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._discard(writer)
            return
        self._writers.add(up_writer)
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(self._pump(reader, up_writer))
                pumps.create_task(self._pump(up_reader, writer))
        except* (OSError, ConnectionError):
            pass
        finally:
            self._discard(writer)
            self._discard(up_writer)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while True:
            await self._flowing.wait()
            if sink.is_closing():
                return
            data = await source.read(THROTTLED_CHUNK if self.bytes_per_s else CHUNK)
            if self.bytes_per_s:
                await asyncio.sleep(len(data) / self.bytes_per_s)
            if not data:
                sink.close()  # one side finished: so does the path
                return
            await self._flowing.wait()  # bytes read before a stall wait for the resume
            if sink.is_closing():
                return
            sink.write(data)
            await sink.drain()

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self._writers.discard(writer)
        with contextlib.suppress(RuntimeError):
            writer.close()
