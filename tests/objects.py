"""Small Kubernetes objects for tests."""

from __future__ import annotations

from typing import Any

from app.informer.objects import WatchEvent


def pod(
    name: str,
    rv: int,
    *,
    namespace: str = "default",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
    kind: str = "Pod",
    api_version: str = "v1",
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "resourceVersion": str(rv),
            "labels": labels or {},
        },
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }


def event(type_: str, name: str, rv: int, **kwargs: Any) -> WatchEvent:
    return WatchEvent.of(type_, pod(name, rv, **kwargs))
