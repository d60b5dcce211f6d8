"""Per-cluster ingest quotas: one cluster flooding must not delay the others.

The broker delivers every cluster's messages to the hub through one session, in one FIFO:
once a flood is queued there, a victim's message waits behind it whatever the hub does
inside. So a cluster over its quota (messages/s or bytes/s, token buckets with a burst)
has its messages dropped at the door, before they are parsed: acknowledged, counted, not
applied. The hub then drains the flood at the cost of a dictionary lookup per message.

A cluster that was over quota lost changes; once it has been calm for `calm_s` the caller
asks it for a full relist (`calmed`), which repairs everything it dropped. Our agents pace
themselves below the default quota (`AgentSettings.send_*`), so only a misbehaving or
hostile sender is cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    messages_per_s: float = 1000.0
    message_burst: float = 1000.0
    bytes_per_s: float = 4 * 1024 * 1024
    byte_burst: float = 16 * 1024 * 1024
    """At least the largest message the hub accepts (512 KiB), or such a message never passes."""
    calm_s: float = 5.0


@dataclass(slots=True)
class _Bucket:
    messages: float
    bytes: float
    at: float
    over_since: float | None = None
    dropped: int = 0
    dropped_bytes: int = 0
    last_drop: float = 0.0


@dataclass(frozen=True, slots=True)
class OverQuota:
    """A cluster whose messages were dropped: since when, how many, how much."""

    cluster: str
    since: float
    dropped: int
    dropped_bytes: int


class ClusterQuota:
    def __init__(
        self,
        settings: QuotaSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.settings = settings or QuotaSettings()
        self._clock = clock
        self._max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}
        self._over: dict[str, _Bucket] = {}
        """The buckets over quota now: `calmed` runs after every batch and looks at these
        alone, not at every cluster's bucket (10,000 clusters, hundreds of batches a second)."""
        self.entered: list[OverQuota] = []
        """Clusters that went over quota since the caller last took this list."""

    def admit(self, cluster: str, size: int) -> bool:
        """Take one message of `size` bytes from the cluster's buckets; False (and counted)
        if it is over quota."""
        s, now = self.settings, self._clock()
        bucket = self._buckets.get(cluster)
        if bucket is None:
            bucket = self._buckets[cluster] = _Bucket(s.message_burst, s.byte_burst, now)
            if len(self._buckets) > self._max_tracked:
                self._forget_idle(now)
        elapsed = now - bucket.at
        bucket.at = now
        bucket.messages = min(s.message_burst, bucket.messages + elapsed * s.messages_per_s)
        bucket.bytes = min(s.byte_burst, bucket.bytes + elapsed * s.bytes_per_s)
        if bucket.messages >= 1.0 and bucket.bytes >= size:
            bucket.messages -= 1.0
            bucket.bytes -= size
            return True
        if bucket.over_since is None:
            bucket.over_since = now
            self._over[cluster] = bucket
            self.entered.append(OverQuota(cluster, now, 0, 0))
        bucket.dropped += 1
        bucket.dropped_bytes += size
        bucket.last_drop = now
        return False

    def over(self) -> list[OverQuota]:
        """Clusters over quota now (dropping, or not yet calm)."""
        return [
            OverQuota(c, b.over_since, b.dropped, b.dropped_bytes)
            for c, b in self._over.items()
            if b.over_since is not None
        ]

    def calmed(self) -> list[OverQuota]:
        """Clusters that were over quota and have dropped nothing for `calm_s`: they leave
        the over-quota state here, with what they lost (the caller asks them to relist)."""
        if not self._over:
            return []
        now = self._clock()
        done: list[OverQuota] = []
        for cluster, b in list(self._over.items()):
            if b.over_since is not None and now - b.last_drop >= self.settings.calm_s:
                done.append(OverQuota(cluster, b.over_since, b.dropped, b.dropped_bytes))
                b.over_since, b.dropped, b.dropped_bytes = None, 0, 0
                del self._over[cluster]
        return done

    def _forget_idle(self, now: float) -> None:
        """A bucket refilled to its burst and not over quota is the same as a new one."""
        s = self.settings
        refill = max(s.message_burst / s.messages_per_s, s.byte_burst / s.bytes_per_s)
        for cluster in [
            c for c, b in self._buckets.items() if b.over_since is None and now - b.at > refill
        ]:
            del self._buckets[cluster]
