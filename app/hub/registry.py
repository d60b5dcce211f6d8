"""Which hub replica (pod) serves which cluster (node).

A replica claims a cluster on every hello and heartbeat it ingests, with a lease of a few
heartbeats; the claim simply expires when the replica stops hearing from the cluster. Because
claims are renewed on every heartbeat, a flushed or restarted Redis is repopulated within one
heartbeat period. Without Redis an in-process registry does the same for a single hub.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from redis.asyncio import Redis


class ClusterRegistry(Protocol):
    async def claim(self, clusters: Iterable[str], lease_s: float) -> None: ...

    async def release(self, clusters: Iterable[str]) -> None:
        """Drop this replica's claims (a cluster said goodbye)."""
        ...

    async def served_by(self, clusters: Sequence[str]) -> dict[str, str | None]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class InMemoryRegistry:
    def __init__(self, replica_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.replica_id = replica_id
        self._clock = clock
        self._leases: dict[str, tuple[str, float]] = {}

    async def claim(self, clusters: Iterable[str], lease_s: float) -> None:
        until = self._clock() + lease_s
        for cluster in clusters:
            self._leases[cluster] = (self.replica_id, until)

    async def release(self, clusters: Iterable[str]) -> None:
        for cluster in clusters:
            if self._leases.get(cluster, ("", 0.0))[0] == self.replica_id:
                del self._leases[cluster]

    async def served_by(self, clusters: Sequence[str]) -> dict[str, str | None]:
        now = self._clock()
        out: dict[str, str | None] = {}
        for cluster in clusters:
            replica, until = self._leases.get(cluster, (None, 0.0))
            out[cluster] = replica if until > now else None
        return out

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        pass


_RELEASE_IF_MINE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisRegistry:
    """Keys `<prefix>cluster:<name>` = replica id, with the lease as TTL."""

    def __init__(self, redis: Redis, replica_id: str, prefix: str = "ti:") -> None:
        self.replica_id = replica_id
        self._redis = redis
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, replica_id: str) -> RedisRegistry:
        return cls(Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2), replica_id)

    def _key(self, cluster: str) -> str:
        return f"{self._prefix}cluster:{cluster}"

    async def claim(self, clusters: Iterable[str], lease_s: float) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for cluster in clusters:
                pipe.set(self._key(cluster), self.replica_id, px=max(1, int(lease_s * 1000)))
            await pipe.execute()

    async def release(self, clusters: Iterable[str]) -> None:
        for cluster in clusters:
            await self._redis.eval(_RELEASE_IF_MINE, 1, self._key(cluster), self.replica_id)

    async def served_by(self, clusters: Sequence[str]) -> dict[str, str | None]:
        if not clusters:
            return {}
        values = await self._redis.mget([self._key(c) for c in clusters])
        return {
            c: (v.decode() if isinstance(v, bytes) else v)
            for c, v in zip(clusters, values, strict=True)
        }

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._redis.aclose()
