"""JSON the HTTP API hands out in more than one place: timestamps, and the `data` of each
SSE event type (`GET /stream`), typed here so the shapes documented are the shapes sent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict


def iso_time(ts: float) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with a `Z` (`2026-11-26T04:20:00.123456Z`);
    None for 0, which the store uses for "never"."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z") if ts else None


class ChangeData(TypedDict):
    """`ADDED`, `MODIFIED`, `DELETED`: the object as stored after the change (for DELETED,
    its last known state)."""

    cluster: str
    object: dict[str, Any]


class ResetData(TypedDict):
    """`RESET`: the revision to re-list at; the stream ends after it."""

    resourceVersion: str


class ClusterData(TypedDict):
    """`CLUSTER`: a cluster went online or offline; `lastSeen` as in `GET /clusters`."""

    cluster: str
    online: bool
    lastSeen: str | None
