"""Refusals on their way to the dead-letter table (`rejections`).

Every refusal is counted (by reason, in `IngestStats`); this keeps a record of it for an
operator, rate-limited per cluster so that a flood of junk costs a counter increment, not a
row each: a cluster gets at most `burst` records at once and `per_s` a second after that,
and the next record it gets says how many were not kept (`suppressed`). Records wait here,
bounded, until the ingest loop writes them with its next transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from app.store.records import RejectionRecord, shown


@dataclass(slots=True)
class _Allowance:
    tokens: float
    at: float
    suppressed: int = 0


class DeadLetters:
    def __init__(
        self,
        *,
        per_s: float = 1.0,
        burst: float = 20.0,
        max_pending: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_s = per_s
        self._burst = burst
        self._max_pending = max_pending
        self._clock = clock
        self._allowances: dict[str, _Allowance] = {}
        self._pending: list[RejectionRecord] = []
        self.dropped = 0
        """Records not kept (rate limit or a full queue)."""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(
        self,
        *,
        cluster: str,
        topic: str,
        type: str,
        reason: str,
        detail: str,
        size: int,
        payload: bytes | str,
        object: str = "",
    ) -> None:
        now = self._clock()
        allowance = self._allowances.get(cluster)
        if allowance is None:
            allowance = self._allowances[cluster] = _Allowance(self._burst, now)
            if len(self._allowances) > 10_000:
                self._forget_full(now)
        allowance.tokens = min(self._burst, allowance.tokens + (now - allowance.at) * self._per_s)
        allowance.at = now
        if allowance.tokens < 1.0 or len(self._pending) >= self._max_pending:
            allowance.suppressed += 1
            self.dropped += 1
            return
        allowance.tokens -= 1.0
        self._pending.append(
            RejectionRecord(
                at=now,
                cluster=cluster,
                topic=topic,
                type=type,
                reason=reason,
                detail=detail,
                size=size,
                payload=shown(payload),
                object=object,
                suppressed=allowance.suppressed,
            )
        )
        allowance.suppressed = 0

    def take(self) -> list[RejectionRecord]:
        taken, self._pending = self._pending, []
        return taken

    def put_back(self, records: list[RejectionRecord]) -> None:
        """Records whose write failed for an outage wait for the next one (still bounded)."""
        room = self._max_pending - len(self._pending)
        self.dropped += max(0, len(records) - room)
        self._pending = records[:room] + self._pending

    def _forget_full(self, now: float) -> None:
        refill = self._burst / self._per_s
        for cluster in [
            c for c, a in self._allowances.items() if a.suppressed == 0 and now - a.at > refill
        ]:
            del self._allowances[cluster]
