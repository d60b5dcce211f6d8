"""The demo's stop sequence, on real (tiny) processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.demo import Part, stop_in_order


def python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_parts_are_stopped_group_by_group_and_a_stubborn_one_is_killed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    gone = python("raise SystemExit(3)")
    polite = python("import time; print('ready', flush=True); time.sleep(60)")
    for proc in (stubborn, polite):
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    gone.wait(10)
    parts = [Part("stubborn", stubborn), Part("gone", gone), Part("polite", polite)]
    try:
        stop_in_order([parts[:2], parts[2:]], timeout_s=0.5)
    finally:
        for proc in (stubborn, gone, polite):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert capsys.readouterr().out.splitlines() == [
        "stopped stubborn (killed: still running 0.5 s after SIGTERM)",
        "stopped gone (it had exited with code 3)",
        "stopped polite",
    ]
    assert (stubborn.returncode, gone.returncode, polite.returncode) == (-9, 3, -15)
