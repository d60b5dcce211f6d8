"""Broker faults: mosquitto killed or stopped, and brought back with its persistence file,
without it, or with a stale copy of it.

Mosquitto (`app.broker.Mosquitto`, `persistence true`, `autosave_interval 1`) keeps sessions,
subscriptions and queued QoS 1 messages in `<data_dir>/mosquitto.db`, written on a clean
shutdown and every second. So:
- restart with persistence: sessions and queues survive (a SIGKILL loses at most the last
  second of them);
- restart without persistence: the file is deleted before the start, as if the broker had
  run without persistence; every session and queued message is gone;
- stale persistence: a copy of the file taken earlier is put back before the start, so the
  broker resumes sessions and queues as they were then (messages acknowledged since come
  back, messages queued since are gone).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from app.broker import Mosquitto

DB_FILE = "mosquitto.db"


class FaultyBroker(Mosquitto):
    """A `Mosquitto` whose persistence file can be dropped, saved and put back."""

    @property
    def db_path(self) -> Path:
        return self.data_dir / DB_FILE

    def save_db(self) -> Path:
        """Copy the persistence file as it is now (at most `autosave_interval` old); waits
        for the first autosave if there was none yet. Blocks: call it in a thread."""
        deadline = time.monotonic() + 5
        while not self.db_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        copy = self.data_dir / f"{DB_FILE}.saved-{time.monotonic_ns()}"
        shutil.copy2(self.db_path, copy)
        return copy

    def start_with(self, persistence: str = "kept", saved: Path | None = None) -> None:
        """Start (after a `stop`) with the persistence file `kept`, `dropped`, or `stale`
        (`saved` put back). Blocks until the broker listens: call it in a thread."""
        if persistence == "dropped":
            self.db_path.unlink(missing_ok=True)
        elif persistence == "stale":
            if saved is None:
                raise ValueError("a stale restart needs the saved file")
            shutil.copy2(saved, self.db_path)
        elif persistence != "kept":
            raise ValueError(f"persistence must be kept, dropped or stale, not {persistence!r}")
        self.start()
