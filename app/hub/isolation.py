"""Writing so that a bad message never blocks a good one, and an outage loses nothing.

`Isolator.write` writes items in order: whole if possible. A failure is either

- the database being unavailable (a lost connection, a locked or read-only file, a full
  disk, a timeout, anything not known to be about the data): the same group is retried
  with backoff (0.1 s doubling to 5 s) until it commits, and `health` says writes fail; or
- data the database will never take (`app.store.errors.is_data_error`): the group is split
  in halves, and a single item further by `split`, until the items that cannot be stored are
  found and handed to `refuse`; everything else commits. Halves keep their order, so the
  order of one cluster's messages holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from app.store.errors import is_data_error

log = logging.getLogger(__name__)

U = TypeVar("U")


@dataclass
class IngestHealth:
    """What readiness needs to know: is ingest committing?"""

    last_commit: float = field(default_factory=time.monotonic)
    failing_since: float | None = None
    """Set while writes fail for the database being unavailable."""
    last_error: str = ""
    write_failures: int = 0
    """Writes that failed for the database being unavailable (and were retried)."""

    def failed(self, exc: Exception, delay: float) -> None:
        self.write_failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.exception("writing a batch failed; retrying (not acknowledged meanwhile)")
        else:
            log.warning("writing a batch failed again (%s); retrying in %.1fs", exc, delay)
        self.last_error = str(exc).split("\n", 1)[0][:300]

    def committed(self) -> None:
        if self.failing_since is not None:
            log.warning("writes work again after %.1fs", time.monotonic() - self.failing_since)
        self.failing_since = None
        self.last_error = ""
        self.last_commit = time.monotonic()


class Isolator:
    def __init__(self, health: IngestHealth) -> None:
        self.health = health

    async def write(
        self,
        items: list[U],
        write: Callable[[list[U]], Awaitable[None]],
        refuse: Callable[[U, Exception], None],
        split: Callable[[U], list[U] | None] = lambda _: None,
    ) -> None:
        groups: deque[list[U]] = deque([items])
        delay = 0.1
        while groups:
            group = groups[0]
            try:
                await write(group)
            except Exception as exc:
                if not is_data_error(exc):
                    self.health.failed(exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                groups.popleft()
                pieces = [group[: len(group) // 2], group[len(group) // 2 :]]
                if len(group) == 1:
                    smaller = split(group[0])
                    pieces = [[piece] for piece in smaller] if smaller else []
                if pieces:
                    groups.extendleft(reversed(pieces))
                else:
                    refuse(group[0], exc)
                continue
            groups.popleft()
            self.health.committed()
