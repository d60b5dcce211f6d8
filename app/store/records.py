"""Plain records handed from the store to the web layer and the hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.informer.objects import KindKey


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One committed change: what SSE clients receive, in revision order."""

    revision: int
    cluster: str
    type: str
    api_version: str
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]
    prev_labels: dict[str, str] | None = None
    """For a MODIFIED that changed the labels: the labels before (else None)."""

    @property
    def labels(self) -> dict[str, str]:
        labels = self.body.get("metadata", {}).get("labels") or {}
        return labels if isinstance(labels, dict) else {}


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    name: str
    online: bool
    last_seen: float


@dataclass
class Applied:
    """The outcome of one committed batch."""

    changes: list[ChangeRecord] = field(default_factory=list)
    resync: dict[str, set[KindKey]] = field(default_factory=dict)
    """Per cluster, the kinds to relist (an empty set: everything, hello included)."""
    clusters: list[ClusterStatus] = field(default_factory=list)
    """Clusters whose online state changed."""
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """Labels of the clusters that said hello in the batch."""
    skipped: int = 0
    """Upserts that were stale or duplicates."""


PAYLOAD_CHARS = 4096
"""How much of a refused message the dead-letter record keeps."""


def shown(payload: bytes | str, limit: int = PAYLOAD_CHARS) -> str:
    """The start of `payload` as text an operator can read and any database can store:
    invalid UTF-8 and control characters (U+0000 above all) escaped."""
    text = (
        payload[:limit].decode("utf-8", "backslashreplace")
        if isinstance(payload, bytes)
        else payload[:limit].encode("utf-8", "backslashreplace").decode()  # lone surrogates
    )
    if any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        text = "".join(c if ord(c) >= 32 or c in "\t\n\r" else f"\\x{ord(c):02x}" for c in text)
    return text


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    """One refused message (or object), as the dead-letter table keeps it."""

    at: float
    cluster: str
    topic: str
    type: str
    reason: str
    detail: str
    size: int
    payload: str
    object: str = ""
    suppressed: int = 0

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "cluster": shown(self.cluster, 253),
            "topic": shown(self.topic, 512),
            "type": shown(self.type, 200),
            "reason": self.reason[:32],
            "detail": shown(self.detail, 1000),
            "object": shown(self.object, 600),
            "size": self.size,
            "payload": shown(self.payload),
            "suppressed": self.suppressed,
        }
