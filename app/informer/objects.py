"""Kubernetes objects as the informer sees them.

Objects travel as plain JSON mappings (`KubeObject`); everything the informer needs from
one is pulled out once, at the edge, into a `ResourceKey` and a `ResourceVersion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

KubeObject = dict[str, Any]

CLUSTER_SCOPED = ""
"""The namespace of cluster-scoped objects (Nodes, Namespaces...)."""


class InvalidObject(ValueError):
    """An object lacks what every Kubernetes object has (apiVersion, kind, metadata.name...)."""


class EventType(StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class KindKey:
    """One kind in one API version, e.g. `apps/v1` + `Deployment`."""

    api_version: str
    kind: str

    @classmethod
    def parse(cls, text: str) -> KindKey:
        """Parse `v1/Pod` or `apps/v1/Deployment`."""
        head, sep, kind = text.strip().rpartition("/")
        if not sep or not head or not kind:
            raise ValueError(f"kind must look like v1/Pod or apps/v1/Deployment, got {text!r}")
        return cls(head, kind)

    def __str__(self) -> str:
        return f"{self.api_version}/{self.kind}"


@dataclass(frozen=True, slots=True)
class ResourceKey:
    """Where an object lives: unique per cluster, stable across delete and re-create."""

    cluster: str
    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def kind_key(self) -> KindKey:
        return KindKey(self.api_version, self.kind)


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The fields of an object the informer orders and indexes by."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: int
    labels: dict[str, str]

    def key(self, cluster: str) -> ResourceKey:
        return ResourceKey(cluster, self.api_version, self.kind, self.namespace, self.name)


def parse_resource_version(value: object) -> int:
    """Resource versions are opaque strings in the API but etcd revisions in practice.

    The hub orders events per object by them, so it needs them as integers; an object
    whose resourceVersion is not a non-negative integer is rejected rather than mis-ordered.
    """
    if isinstance(value, bool):
        raise InvalidObject(f"resourceVersion must be an integer string, got {value!r}")
    if isinstance(value, int):
        rv = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        rv = int(value)
    else:
        raise InvalidObject(f"resourceVersion must be an integer string, got {value!r}")
    if rv < 0 or rv >= 2**63:
        raise InvalidObject(f"resourceVersion out of range: {value!r}")
    return rv


def object_ref(obj: object) -> ObjectRef:
    """Validate a Kubernetes object and pull out its identity; raise InvalidObject."""
    if not isinstance(obj, dict):
        raise InvalidObject("object must be a JSON object")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    meta = obj.get("metadata")
    if not isinstance(api_version, str) or not api_version:
        raise InvalidObject("object lacks apiVersion")
    if not isinstance(kind, str) or not kind:
        raise InvalidObject("object lacks kind")
    if not isinstance(meta, dict):
        raise InvalidObject("object lacks metadata")
    name = meta.get("name")
    namespace = meta.get("namespace", CLUSTER_SCOPED) or CLUSTER_SCOPED
    uid = meta.get("uid")
    if not isinstance(name, str) or not name:
        raise InvalidObject("object lacks metadata.name")
    if not isinstance(namespace, str):
        raise InvalidObject("metadata.namespace must be a string")
    if not isinstance(uid, str) or not uid:
        raise InvalidObject(f"{kind} {name!r} lacks metadata.uid")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidObject(f"{kind} {name!r}: metadata.labels must map strings to strings")
    rv = parse_resource_version(meta.get("resourceVersion"))
    return ObjectRef(api_version, kind, namespace, name, uid, rv, labels)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one object, as a Kubernetes watch reports it."""

    type: EventType
    object: KubeObject
    ref: ObjectRef

    @classmethod
    def of(cls, type_: EventType | str, obj: KubeObject) -> WatchEvent:
        return cls(EventType(type_), obj, object_ref(obj))
