"""The contract between an agent and the cluster it watches.

A source lists each configured kind on demand (`list`) and, while `run` is awaited, reports
every change through a `SourceSink`. The sink is synchronous and must not block: the agent
conflates what it gets into a bounded buffer. A source that had to relist by itself (a watch
expired with 410 Gone) reports the fresh listing through `sink.listed`, because deletes may
have been missed and only a listing with replace semantics repairs that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.informer.objects import KindKey, KubeObject, WatchEvent


@dataclass(frozen=True, slots=True)
class Listing:
    """A consistent list of one kind: every object as of `resource_version`."""

    kind: KindKey
    items: list[KubeObject]
    resource_version: int


class SourceSink(Protocol):
    def event(self, event: WatchEvent) -> None: ...

    def listed(self, listing: Listing) -> None: ...


class ClusterSource(Protocol):
    @property
    def kinds(self) -> tuple[KindKey, ...]: ...

    @property
    def reports_initial_listing(self) -> bool:
        """True if `run` starts by reporting a listing of every kind through `sink.listed`
        (a list-then-watch source); the agent then does not list them itself at start."""
        ...

    async def list(self, kind: KindKey) -> Listing:
        """A consistent listing of one kind."""
        ...

    async def run(self, sink: SourceSink) -> None:
        """Watch every kind and report changes until cancelled."""
        ...


@runtime_checkable
class WorkloadTarget(Protocol):
    """A cluster the agent can change: what workload delivery applies manifests to."""

    async def apply_object(self, obj: KubeObject) -> KubeObject:
        """Create or update (server-side apply) one object; return it as stored."""
        ...

    async def delete_object(self, kind: KindKey, namespace: str, name: str) -> bool: ...

    async def get_object(self, kind: KindKey, namespace: str, name: str) -> KubeObject | None: ...

    async def labelled(self, key: str, value: str) -> list[tuple[KindKey, str, str]]:
        """(kind, namespace, name) of every object carrying the label `key=value`."""
        ...
