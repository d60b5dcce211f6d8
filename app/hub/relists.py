"""How often the hub asks one cluster to relist one kind.

Every reason to relist (a snapshot gap, a digest that differs, a refused object, a cluster
back from over quota) goes through `RelistLimiter`: one request per (cluster, kind) per
interval, the interval doubling from `base_s` to `cap_s` while requests keep coming, and
falling back to `base_s` after a quiet interval. A sender whose objects the hub refuses
(so its digest never matches) is asked ever more rarely, not every resync period forever;
a one-off drift is repaired at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from app.informer.objects import KindKey

EVERYTHING = None
"""The kind of a request for everything (hello included)."""


@dataclass(slots=True)
class _Turn:
    next_at: float
    interval: float


class RelistLimiter:
    def __init__(
        self,
        *,
        base_s: float = 5.0,
        cap_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self._clock = clock
        self._turns: dict[tuple[str, KindKey | None], _Turn] = {}
        self.suppressed = 0

    def allow(self, cluster: str, kind: KindKey | None) -> bool:
        now = self._clock()
        key = (cluster, kind)
        turn = self._turns.get(key)
        if turn is not None and now < turn.next_at:
            self.suppressed += 1
            return False
        if turn is None or now >= turn.next_at + turn.interval:
            interval = self.base_s  # first request, or quiet for a whole interval
        else:
            interval = min(turn.interval * 2, self.cap_s)
        self._turns[key] = _Turn(now + interval, interval)
        if len(self._turns) > 100_000:
            self._forget_quiet(now)
        return True

    def _forget_quiet(self, now: float) -> None:
        for key in [k for k, t in self._turns.items() if now >= t.next_at + t.interval]:
            del self._turns[key]
