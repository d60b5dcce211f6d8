"""The shape every manifest must have before anyone tries to apply it.

One check, used on both sides of workload delivery: the hub refuses a workload whose
manifests fail it (a 4xx naming the field), and the agent refuses to apply such a version
(a failed status naming the field), so a hand-made or older hub's message cannot crash it.

It checks what a Kubernetes API server would refuse in the *shape* of the identity and
metadata, nothing deeper: `apiVersion` and `kind` non-empty strings, `metadata` an object
with a usable `name` (and `namespace`, if any), `labels` and `annotations` mapping strings to
strings. Whether a Deployment's spec makes sense is the API server's business.
"""

from __future__ import annotations

from typing import Any

MAX_NAME = 253
"""A DNS subdomain, the longest name most kinds allow."""
MAX_NAMESPACE = 63
"""A namespace is a DNS label."""


class InvalidManifest(ValueError):
    """A manifest the API server would refuse for its shape; the message names the field."""


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _segment_problem(value: str, limit: int) -> str:
    """Why `value` cannot be a name in an API path ("" if it can)."""
    if len(value) > limit:
        return f"is {len(value)} characters, over {limit}"
    if value in (".", ".."):
        return "may not be '.' or '..'"
    if "/" in value or "%" in value:
        return "may not contain '/' or '%'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "may not contain control characters"
    return ""


def _string_map_problem(value: object) -> str:
    """Why `value` is not a mapping of strings to strings ("" if it is; null is allowed)."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        return f"got {type(value).__name__}"
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            return f"{_short(key)} maps to {_short(item)}"
    return ""


def _describe(manifest: dict[str, Any], meta: dict[str, Any], position: int | None) -> str:
    """`ConfigMap shop/cfg`, as much of it as is usable, or `manifest 2`."""
    kind = manifest.get("kind")
    name = meta.get("name")
    namespace = meta.get("namespace")
    where = f"manifest {position}" if position is not None else "a manifest"
    if not isinstance(kind, str) or not kind or _segment_problem(kind, 100):
        return where
    if not isinstance(name, str) or not name or _segment_problem(name, MAX_NAME):
        return kind
    if isinstance(namespace, str) and namespace and not _segment_problem(namespace, MAX_NAMESPACE):
        return f"{kind} {namespace}/{name}"
    return f"{kind} {name}"


def check_manifest(manifest: object, position: int | None = None) -> None:
    """Raise InvalidManifest, naming the object and the field, unless `manifest` has the
    shape of a Kubernetes object. `position` (1-based) names the object when it has no
    usable kind."""
    if not isinstance(manifest, dict):
        where = f"manifest {position}" if position is not None else "a manifest"
        raise InvalidManifest(f"{where}: must be an object, got {type(manifest).__name__}")
    meta = manifest.get("metadata")
    what = _describe(manifest, meta if isinstance(meta, dict) else {}, position)
    for field in ("apiVersion", "kind"):
        value = manifest.get(field)
        if not isinstance(value, str) or not value:
            raise InvalidManifest(f"{what}: {field} must be a non-empty string")
    if problem := _segment_problem(manifest["kind"], 100):
        raise InvalidManifest(f"{what}: kind {_short(manifest['kind'])} {problem}")
    if not isinstance(meta, dict):
        raise InvalidManifest(f"{what}: metadata must be an object")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidManifest(f"{what}: metadata.name must be a non-empty string")
    if problem := _segment_problem(name, MAX_NAME):
        raise InvalidManifest(f"{what}: metadata.name {_short(name)} {problem}")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise InvalidManifest(
            f"{what}: metadata.namespace must be a string, got {type(namespace).__name__}"
        )
    if namespace and (problem := _segment_problem(namespace, MAX_NAMESPACE)):
        raise InvalidManifest(f"{what}: metadata.namespace {_short(namespace)} {problem}")
    for field in ("labels", "annotations"):
        if problem := _string_map_problem(meta.get(field)):
            raise InvalidManifest(
                f"{what}: metadata.{field} must map strings to strings ({problem})"
            )


def check_manifests(manifests: list[Any]) -> None:
    """`check_manifest` on each, numbered from 1; the first problem is raised."""
    for position, manifest in enumerate(manifests, 1):
        check_manifest(manifest, position)
