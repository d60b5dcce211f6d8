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
    skipped: int = 0
    """Upserts that were stale or duplicates."""
