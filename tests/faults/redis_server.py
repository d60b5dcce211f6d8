"""A private redis-server on a free port (no persistence), for the hub's cluster registry."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType

from app.broker import free_port


class RedisServer:
    """`async with RedisServer(dir) as redis:` runs redis-server until the block ends."""

    def __init__(self, work_dir: Path) -> None:
        self.port = free_port()
        self.work_dir = work_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.work_dir / "redis.log", "ab") as log:
            self._proc = subprocess.Popen(
                [binary, *args, "--dir", str(self.work_dir)], stdout=log, stderr=log
            )

    async def __aenter__(self) -> RedisServer:
        await asyncio.to_thread(self._spawn)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            await asyncio.to_thread(self._proc.wait, 10)
