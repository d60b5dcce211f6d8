"""Hub and agent processes started by the fault harness, tracked by the PIDs it started.

Nothing here looks processes up by name (`pgrep` would see other people's tests on a shared
machine): a `ManagedProcess` signals only the child it started itself, and every child is
waited for, so none is left behind or reaped by someone else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Usage:
    """What one process holds: resident memory and open file descriptors."""

    rss_kib: int
    fds: int


def usage(pid: int) -> Usage | None:
    """RSS and fd count from /proc; None if the process is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
    return Usage(int(rss), fds)


class ManagedProcess:
    """`python -m app <args>` (or any argv), restartable with the same arguments.

    Output goes to `log_path`, appended across restarts. `pid` is the current child's;
    `incarnations` counts starts, so a before/after comparison can tell a restarted process.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = {**os.environ, **(env or {})}
        self.incarnations = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def app(cls, name: str, *args: str, log_dir: Path, **env: str) -> ManagedProcess:
        return cls(
            name, [sys.executable, "-m", "app", *args], log_path=log_dir / f"{name}.log", env=env
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive and self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_status(self) -> str:
        """How the current child ended ("running" if it has not)."""
        code = self._proc.poll() if self._proc is not None else None
        if code is None:
            return "running" if self._proc is not None else "not started"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        self._reap()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.argv, stdout=log, stderr=log, env=self.env)
        self.incarnations += 1

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the child this object started (and only to it)."""
        if self.alive and self._proc is not None:
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, then reap."""
        self.signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM; SIGKILL if it has not exited within `timeout_s`."""
        if self._proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._reap()

    def usage(self) -> Usage | None:
        pid = self.pid
        return usage(pid) if pid else None

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
            self._proc = None
