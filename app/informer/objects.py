"""Kubernetes objects as the informer sees them.

Objects travel as plain JSON mappings (`KubeObject`); everything the informer needs from
one is pulled out once, at the edge, into a `ResourceKey` and a `ResourceVersion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

KubeObject = dict[str, Any]

MAX_OBJECT_DEPTH = 200
"""The deepest nesting of an object the protocol carries; the object itself is level 1 and
every object or array inside adds one. Real objects, CRDs with embedded OpenAPI schemas
included, stay far below it; orjson, which writes every stored body, cannot go past 254."""

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


class ResourceKey(NamedTuple):
    """Where an object lives: unique per cluster, stable across delete and re-create.

    A named tuple, not a frozen dataclass: the writer builds and hashes several per stored
    change, and a tuple does both in C (3x faster; the dataclass' hash was 1/8 of the hub's
    samples at full ingest)."""

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

    @property
    def kind_key(self) -> KindKey:
        return KindKey(self.api_version, self.kind)


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
    for field, value in (
        ("apiVersion", api_version),
        ("kind", kind),
        ("metadata.namespace", namespace),
        ("metadata.name", name),
        ("metadata.uid", uid),
    ):
        if "\x00" in value:
            raise InvalidObject(f"{kind} {name!r}: {field} contains U+0000")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise InvalidObject(f"{kind} {name!r}: metadata.labels must map strings to strings")
    rv = parse_resource_version(meta.get("resourceVersion"))
    return ObjectRef(api_version, kind, namespace, name, uid, rv, labels)


def _deeper_than(obj: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:  # type: ignore[attr-defined]
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def object_json(obj: KubeObject, ref: ObjectRef | None = None) -> bytes:
    """`obj` as JSON, checked against `MAX_OBJECT_DEPTH`; InvalidObject if it nests deeper
    or holds a value JSON cannot carry.

    The nesting is walked only when the JSON holds more brackets than the limit (a count
    at C speed), so ordinary objects pay for one `orjson.dumps`, which the store needs anyway.
    """
    what = f"{ref.kind} {ref.namespace}/{ref.name}: " if ref else ""
    try:
        body = orjson.dumps(obj)
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):
            raise InvalidObject(f"{what}nests deeper than {MAX_OBJECT_DEPTH} levels") from None
        raise InvalidObject(f"{what}cannot be written as JSON ({exc})") from None
    opens = body.count(b"{") + body.count(b"[")
    if opens > MAX_OBJECT_DEPTH and _deeper_than(obj, MAX_OBJECT_DEPTH):
        raise InvalidObject(f"{what}nests deeper than {MAX_OBJECT_DEPTH} levels")
    return body


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one object, as a Kubernetes watch reports it."""

    type: EventType
    object: KubeObject
    ref: ObjectRef
    json: bytes = b""
    """The object as JSON, when the receiver already wrote it (`of(..., encode=True)`)."""

    @classmethod
    def of(cls, type_: EventType | str, obj: KubeObject, *, encode: bool = False) -> WatchEvent:
        """Validate `obj`; with `encode`, also write it as JSON (depth-checked) once, for
        whoever stores or forwards it."""
        ref = object_ref(obj)
        return cls(EventType(type_), obj, ref, object_json(obj, ref) if encode else b"")
