"""The hub's SQLite files made unwritable with the immutable attribute (`chattr +i`).

Permissions do not stop root, the immutable attribute does: writes through descriptors the
hub already holds fail too (SQLite reports a disk I/O error). Not every filesystem has the
attribute (tmpfs, overlayfs on some kernels): `immutable_unsupported` says why, and the
matrix then marks the row skipped with that reason.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def _chattr(flag: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shutil.which("chattr") or "chattr", flag, str(path)], capture_output=True, text=True
    )


def immutable_unsupported(directory: Path) -> str | None:
    """None if files in `directory` can be made immutable; else the reason they cannot."""
    if shutil.which("chattr") is None:
        return "chattr is not installed (e2fsprogs)"
    probe = directory / ".chattr-probe"
    probe.write_text("probe")
    try:
        result = _chattr("+i", probe)
        if result.returncode != 0:
            return f"chattr +i fails here: {result.stderr.strip() or result.returncode}"
        _chattr("-i", probe)
        return None
    finally:
        _chattr("-i", probe)
        probe.unlink(missing_ok=True)


@contextmanager
def immutable(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Make the existing `paths` immutable for the block; yields those that were."""
    done: list[Path] = []
    try:
        for path in paths:
            if path.exists() and _chattr("+i", path).returncode == 0:
                done.append(path)
        yield done
    finally:
        for path in done:
            _chattr("-i", path)
