"""Workload delivery against a Kubernetes API server: apply, get, delete and find by label.

Contract:
- `apply` is server-side apply (a PATCH of `application/apply-patch+yaml`, the object sent as
  JSON, which is YAML too) as the field manager `field_manager`, with `force=true`: the
  desired state the agent delivers wins over fields another manager took since, as a
  controller's would. The server's object is returned;
- server-owned metadata (uid, resourceVersion, managedFields, ...) is left out of what is
  applied, so a manifest exported from a cluster applies anywhere and is not a precondition
  that fails forever once the object was recreated;
- a namespaced object without a namespace lives in `default` (as with kubectl); the namespace
  of a cluster-scoped object is ignored;
- a missing object, or one of a kind the server does not serve, is `None` to `get` and
  `False` to `delete`; every other refusal raises `KubeApiError` (or a subclass) with what was
  attempted and the server's Status message;
- `labelled` searches the kinds it is given plus every kind applied through this writer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from app.agent.sources.kube_api import (
    NOT_FOUND,
    ApiResource,
    KubeApi,
    KubeApiError,
    UnknownKind,
)
from app.informer.objects import InvalidObject, KindKey, KubeObject

logger = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
SERVER_OWNED_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)
"""Metadata the API server sets; applying `managedFields` is even refused outright."""


class KubeWriter:
    """Changes objects through a `KubeApi`, remembering which kinds it applied."""

    def __init__(self, api: KubeApi, *, field_manager: str, page_size: int) -> None:
        if not field_manager:
            raise ValueError("server-side apply needs a field manager")
        self._api = api
        self._field_manager = field_manager
        self._page_size = page_size
        self._applied: dict[KindKey, None] = {}  # an ordered set

    @property
    def applied_kinds(self) -> tuple[KindKey, ...]:
        return tuple(self._applied)

    async def apply(self, obj: KubeObject) -> KubeObject:
        kind, namespace, name = _identity(obj)
        what = f"applying {kind.kind} {_where(namespace, name)}"
        query = [("fieldManager", self._field_manager), ("force", "true")]
        try:
            resource = await self._api.resource(kind)
            path = resource.object_path(namespace, name)
            body = _apply_body(obj, resource)
            stored = await self._api.request_json(
                "PATCH", path, query, body=body, content_type=APPLY_PATCH
            )
        except KubeApiError as exc:
            raise _explained(exc, what) from exc
        self._applied[kind] = None
        return _with_type_meta(kind, stored)

    async def get(self, kind: KindKey, namespace: str, name: str) -> KubeObject | None:
        try:
            resource = await self._api.resource(kind)
            stored = await self._api.get_json(resource.object_path(namespace, name))
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise _explained(exc, f"getting {kind.kind} {_where(namespace, name)}") from exc
        return _with_type_meta(kind, stored)

    async def delete(self, kind: KindKey, namespace: str, name: str) -> bool:
        """Delete one object, its dependents in the background; False if there was none."""
        query = [("propagationPolicy", "Background")]
        try:
            resource = await self._api.resource(kind)
            await self._api.request_json("DELETE", resource.object_path(namespace, name), query)
        except KubeApiError as exc:
            if exc.status == NOT_FOUND:
                return False
            raise _explained(exc, f"deleting {kind.kind} {_where(namespace, name)}") from exc
        return True

    async def labelled(
        self, kinds: Sequence[KindKey], key: str, value: str
    ) -> list[tuple[KindKey, str, str]]:
        """(kind, namespace, name) of every object labelled `key=value`, in every namespace."""
        found: list[tuple[KindKey, str, str]] = []
        for kind in dict.fromkeys([*kinds, *self._applied]):
            try:
                resource = await self._api.resource(kind)
            except UnknownKind:
                logger.debug("%s is not served; nothing of it can be labelled", kind)
                continue
            items, _ = await self._api.list_all(
                resource, page_size=self._page_size, label_selector=f"{key}={value}"
            )
            for item in items:
                meta = item.get("metadata") if isinstance(item, dict) else None
                meta = meta if isinstance(meta, dict) else {}
                labels = meta.get("labels")
                name = meta.get("name")
                if isinstance(labels, dict) and labels.get(key) == value and isinstance(name, str):
                    found.append((kind, str(meta.get("namespace") or ""), name))
        return found


def _identity(obj: KubeObject) -> tuple[KindKey, str, str]:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = (meta.get("namespace") if isinstance(meta, dict) else None) or ""
    if not (isinstance(api_version, str) and api_version and isinstance(kind, str) and kind):
        raise InvalidObject("an object to apply needs an apiVersion and a kind")
    if not (isinstance(name, str) and name and isinstance(namespace, str)):
        raise InvalidObject(f"a {kind} to apply needs a metadata.name")
    return KindKey(api_version, kind), namespace, name


def _apply_body(obj: KubeObject, resource: ApiResource) -> KubeObject:
    body: KubeObject = orjson.loads(orjson.dumps(obj))  # a deep copy of plain JSON
    meta: dict[str, Any] = body["metadata"]
    for field in SERVER_OWNED_METADATA:
        meta.pop(field, None)
    if not resource.namespaced:
        meta.pop("namespace", None)
    elif not meta.get("namespace"):
        meta["namespace"] = resource.object_namespace("")
    return body


def _with_type_meta(kind: KindKey, obj: KubeObject) -> KubeObject:
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)
    return obj


def _where(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _explained(exc: KubeApiError, what: str) -> KubeApiError:
    """The same error (same class, status and reason), saying what was being attempted."""
    return type(exc)(exc.status, f"{what}: {exc.message}", exc.reason)
