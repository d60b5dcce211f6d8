"""The hub gives freed memory back: RSS after a storm falls once the storm's objects are gone."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from app.hub.heap import release_free_memory


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_memory_freed_after_a_storm_goes_back_to_the_os() -> None:
    storm = [bytes(2000) + i.to_bytes(4, "big") for i in range(100_000)]  # 200 MB, malloc'd
    keep = storm[::1000]  # a few survivors scattered through the heap, as after a storm
    del storm
    before = rss()
    assert release_free_memory()
    assert before - rss() > 100 * 1024 * 1024
    assert len(keep) == 100
