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
    lines = sorted(f"{uid}:{rv}" for uid, rv in pairs)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return KindDigest(len(lines), h.hexdigest()[:32])
