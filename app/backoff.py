"""Retry delays for a loop that must never give up (a reflector reconnecting to its server)."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential delays with jitter: ~0.5 s, 1 s, 2 s ... 30 s, each drawn from [d/2, d].

    The jitter keeps many agents from reconnecting in lockstep after a shared outage. Call
    `reset` once the thing retried has worked again, so the next failure starts small.
    """

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError("need 0 < initial_s <= cap_s")
        self._initial_s = initial_s
        self._cap_s = cap_s
        self._next_s = initial_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(delay * 2, self._cap_s)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._next_s = self._initial_s


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Stateless form, for callers that count attempts themselves (gmqtt does): exponential
    with full jitter, uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap_s, base_s * 2 ** min(attempt, 30)))
