"""A private mosquitto broker as a child process, for the demo, the tests and the benchmark.

Two shapes: plain (anonymous MQTT on loopback, for benchmarks and most tests), or secure:
the shipped `deploy/mosquitto.conf` itself, with only its port and file locations rewritten
(`secure_config`), so what the demo and the tests run is what compose ships.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SHIPPED_CONFIG = DEPLOY / "mosquitto.conf"
SHIPPED_ACL = DEPLOY / "mosquitto-acl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")
    return found


class Mosquitto:
    """`with Mosquitto() as broker:` runs mosquitto on a free port until the block ends.

    The config raises mosquitto's silent-loss defaults (queued messages per session, the
    in-flight window) and keeps sessions on disk in `data_dir` so a restart loses nothing.

    `own_session` starts mosquitto in a session (and process group) of its own, so a
    terminal's Ctrl-C, which goes to the whole foreground process group, does not reach it:
    its owner stops it, after the clients that still need it.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        *,
        own_session: bool = False,
        pki_dir: Path | None = None,
        acl_file: Path | None = SHIPPED_ACL,
    ) -> None:
        """With `pki_dir` (made by `pki init`), the shipped secure configuration; `acl_file`
        None leaves the ACL out (tests of the hub's own defences)."""
        self.port = port or free_port()
        self.own_session = own_session
        self.pki_dir = pki_dir
        self.acl_file = acl_file
        self._own_dir = data_dir is None
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="ti-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.pki_dir else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "mosquitto.pid"

    def secure_config(self) -> list[str]:
        """deploy/mosquitto.conf, every line kept but the listener (a free port on loopback)
        and the file locations (this PKI, this data directory, the shipped ACL)."""
        assert self.pki_dir is not None
        lines: list[str] = []
        for line in SHIPPED_CONFIG.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "listener":
                line = f"listener {self.port} 127.0.0.1"
            elif key in ("cafile", "certfile", "keyfile", "crlfile"):
                line = f"{key} {self.pki_dir / Path(value).name}"
            elif key == "acl_file":
                if self.acl_file is None:
                    continue
                line = f"acl_file {self.acl_file}"
            elif key == "pid_file":
                line = f"pid_file {self.pid_file}"
            elif key == "persistence_location":
                line = f"persistence_location {self.data_dir}/"
            elif key == "log_dest":
                line = "log_dest stderr"
            lines.append(line)
        return lines

    def _config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "mosquitto.conf"
        if self.pki_dir is not None:
            lines = self.secure_config()
            if os.geteuid() == 0:
                lines.append("user root")
            path.write_text("\n".join(lines) + "\n")
            return path
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            "max_packet_size 2097152",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        config = self._config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [find_mosquitto(), "-c", str(config)],
                stdout=log,
                stderr=log,
                start_new_session=self.own_session,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text().strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            self.process.wait(10)
        self.process = None

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its ACL, certificates and CRL."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
