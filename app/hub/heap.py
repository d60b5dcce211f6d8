"""Giving the memory Python freed back to the operating system.

CPython returns freed objects to the C allocator, and glibc's keeps the pages. After a
connect storm (thousands of agents at once, an ingest queue of 20,000 parsed messages) the
hub's RSS stayed at its peak though its live objects were a fraction of it: measured with
1,000 new clusters, 404 MB RSS against 57 MB traced by `tracemalloc`. `malloc_trim(0)`
hands the free pages back (404 -> 260 MB, in 25 ms). Without glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim: ctypes._NamedFuncPointer = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library cannot (not glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
