"""An in-memory Kubernetes API server: just enough of one for a list/watch client.

It serves discovery (`/api/v1`, `/apis/apps/v1`), paginated lists (`limit`/`continue`,
`labelSelector=key=value[,...]`) and watches (chunked newline-delimited JSON, bookmarks,
`timeoutSeconds`) over a store with one global resourceVersion counter; single objects can be
read (GET), deleted (DELETE) and server-side applied (PATCH of `application/apply-patch+yaml`,
which needs a `fieldManager`; see `_apply` for how little of the merge is modelled). Every
change lands in the watch history. A test can misbehave on purpose: hold watch events back,
lose history (410 Gone, as an ERROR event or as an HTTP status), end watches, expire a
continue token, restart the server under open connections.

It is no less consistent than a real API server, so what a client gets wrong is the client's:
- a paginated list is one snapshot: the first page pins the matching objects as of its
  resourceVersion (etcd's MVCC serves later pages from that revision), and every later page
  comes from the pinned set whatever changed meanwhile; stored objects are never changed in
  place, so pinning copies references only. An evicted or compacted token gets 410 Gone;
- a watch from a resourceVersion the server has not reached waits up to
  `TOO_LARGE_WAIT_S` for it, then is refused with 504 "Too large resource version"
  (reason Timeout, cause ResourceVersionTooLarge), as the watch cache does.

For fault tests it gives the ground truth (`truth()`, and `GET /debug/truth` for another
process), and two ways of rewriting history: `recreate` (the cluster deleted and created
again under the same name: new uids, the counter restarted lower) and `backup`/`restore`
(an etcd snapshot restored: objects and counter go back, later objects vanish, deleted ones
return with their old versions). Either ends every open watch, as the API server restart
that goes with it would.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import itertools
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import yaml
from aiohttp import web

from tests.agent.fake_kube_truth import Truth, truth_document

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class FakeResource:
    group_version: str
    plural: str
    kind: str
    namespaced: bool


RESOURCES = (
    FakeResource("v1", "pods/status", "Pod", True),  # a subresource, listed before its parent
    FakeResource("v1", "pods", "Pod", True),
    FakeResource("v1", "configmaps", "ConfigMap", True),
    FakeResource("v1", "nodes", "Node", False),
    FakeResource("apps/v1", "deployments", "Deployment", True),
)
SERVED = {(r.group_version, r.plural): r for r in RESOURCES if "/" not in r.plural}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
APPLY_PATCH = "application/apply-patch+yaml"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
TYPE_AND_OWNED = ("apiVersion", "kind", "metadata", "status")
"""What an apply does not copy from its patch as a top-level field."""
PINNED_LISTS = 256
"""Paginated lists whose snapshot is kept for their continue tokens; older ones get 410."""
TOO_LARGE_WAIT_S = 3.0
"""How long a watch from a future resourceVersion waits for it (the watch cache's 3 s)."""


@dataclass(frozen=True, slots=True)
class StoreBackup:
    """An etcd snapshot: the object set and the counter at `rv` (see `FakeKubeApi.restore`)."""

    rv: int
    objects: Mapping[tuple[str, str, str], Obj]


@dataclass(frozen=True, slots=True)
class _PinnedList:
    rv: int
    items: list[Obj]


@dataclass(frozen=True, slots=True)
class _Change:
    rv: int
    plural: str  # "" for a bookmark, which every watch receives
    type: str
    obj: Obj


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


def _json(body: Obj, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _refuse(code: int, reason: str, message: str) -> web.Response:
    return _json(_status(code, reason, message), code)


def _not_served() -> web.Response:
    return _refuse(404, "NotFound", "the server could not find the requested resource")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_selector(selector: str) -> dict[str, str] | None:
    """`a=b,c==d` as {a: b, c: d}; None for what this fake does not understand."""
    wanted: dict[str, str] = {}
    for term in filter(None, selector.split(",")):
        key, equals, value = term.replace("==", "=").partition("=")
        if not equals or not key or "!" in key:
            return None
        wanted[key.strip()] = value.strip()
    return wanted


def _labels(obj: Obj) -> dict[str, str]:
    labels = obj["metadata"].get("labels")
    return labels if isinstance(labels, dict) else {}


class FakeKubeApi:
    """The store, the history of changes and the HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.rv = 1000
        self.port = 0
        self.watch_requests: list[tuple[str, int]] = []
        self.list_requests: list[tuple[str, dict[str, str]]] = []
        self.authorizations: list[str] = []
        self.apply_requests: list[tuple[str, dict[str, str], str]] = []
        """(plural, query, content type) of every PATCH, refused or not."""
        self.delete_requests: list[tuple[str, dict[str, str]]] = []
        self.expired_as_http = False
        """Answer a watch from compacted history with HTTP 410 instead of an ERROR event."""
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: list[_Change] = []
        self._compacted_rv = 0
        self._expire_epoch = 0
        self._end_epoch = 0
        self._paused = False
        self._expire_next_continue = False
        self._pinned: OrderedDict[str, _PinnedList] = OrderedDict()
        self._list_ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    @asynccontextmanager
    async def serving(cls) -> AsyncIterator[FakeKubeApi]:
        api = cls()
        await api._start()
        try:
            yield api
        finally:
            await api._stop()

    async def restart(self) -> None:
        """Stop the server, dropping open watches mid-stream, and start it on the same port."""
        await self._stop()
        await self._start()

    # -- changing the store ------------------------------------------------------------

    def create(self, plural: str, name: str, namespace: str = "default", **fields: Any) -> Obj:
        resource = self._resource(plural)
        meta: Obj = {"name": name, "uid": str(uuid.uuid4())}
        if resource.namespaced:
            meta["namespace"] = namespace
        obj: Obj = {"apiVersion": resource.group_version, "kind": resource.kind, "metadata": meta}
        obj.update(fields)
        return self._record(plural, "ADDED", obj)

    def modify(self, plural: str, name: str, namespace: str = "default", **fields: Any) -> Obj:
        obj = copy.deepcopy(self._objects[self._key(plural, name, namespace)])
        obj.update(fields)
        return self._record(plural, "MODIFIED", obj)

    def delete(self, plural: str, name: str, namespace: str = "default") -> Obj:
        obj = copy.deepcopy(self._objects[self._key(plural, name, namespace)])
        return self._record(plural, "DELETED", obj)

    def get(self, plural: str, name: str, namespace: str = "default") -> Obj | None:
        """A copy of the stored object, or None."""
        obj = self._objects.get(self._key(plural, name, namespace))
        return copy.deepcopy(obj) if obj is not None else None

    def put_raw(self, plural: str, obj: Obj) -> None:
        """Store and announce `obj` exactly as given, resourceVersion included."""
        self.rv += 1
        meta = obj["metadata"]
        self._objects[(plural, meta.get("namespace", ""), meta["name"])] = obj
        self._history.append(_Change(self.rv, plural, "ADDED", obj))
        self._notify()

    def bookmark(self) -> int:
        """Send every open watch (that asked for bookmarks) the current resourceVersion."""
        self._history.append(_Change(self.rv, "", "BOOKMARK", {}))
        self._notify()
        return self.rv

    # -- misbehaving -------------------------------------------------------------------

    @contextmanager
    def watches_paused(self) -> Iterator[None]:
        """Open watches send nothing while paused (but still end or expire)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
            self._notify()

    def compact(self) -> None:
        """Forget history: watches and continue tokens from before now get 410 Gone."""
        self._compacted_rv = self.rv

    def expire_watches(self) -> None:
        """Compact, and end every open watch with a 410 ERROR event instead of what it missed."""
        self.compact()
        self._expire_epoch += 1
        self._notify()

    def end_watches(self) -> None:
        """End every open watch cleanly, after it has sent what it has."""
        self._end_epoch += 1
        self._notify()

    def expire_next_continue(self) -> None:
        """The next list request carrying a continue token gets 410 Gone."""
        self._expire_next_continue = True

    # -- ground truth and rewritten history --------------------------------------------

    def truth(self) -> Truth:
        """Every live object's (uid, resourceVersion), keyed by `ObjectId`, as of now."""
        out: Truth = {}
        for (plural, namespace, name), obj in self._objects.items():
            resource = self._resource(plural)
            kind = f"{resource.group_version}/{resource.kind}"
            meta = obj["metadata"]
            out[(kind, namespace, name)] = (meta["uid"], int(meta["resourceVersion"]))
        return out

    def keys(self, plural: str) -> list[tuple[str, str]]:
        """(namespace, name) of every stored object of `plural`."""
        return [(ns, name) for p, ns, name in self._objects if p == plural]

    def recreate(self, start_rv: int = 1000) -> None:
        """The cluster deleted and created again under the same name: every object comes
        back under its old name with a new uid, the counter restarted at `start_rv`, the old
        history gone, and every open watch ended (a new API server)."""
        old = sorted(self._objects.items())
        self.rv = start_rv
        self._objects = {}
        self._history = []
        self._compacted_rv = 0
        self._pinned.clear()
        for (plural, _, _), obj in old:
            fresh = copy.deepcopy(obj)
            fresh["metadata"]["uid"] = str(uuid.uuid4())
            self._record(plural, "ADDED", fresh)
        self.end_watches()

    def backup(self) -> StoreBackup:
        """An etcd snapshot of now, for `restore`."""
        return StoreBackup(self.rv, dict(self._objects))

    def restore(self, backup: StoreBackup) -> None:
        """An etcd restore from `backup`, without bumping the revision: the objects and the
        counter go back to `backup.rv` (objects created since vanish, deleted ones return with
        their old versions), history after it is forgotten, continue tokens expire, and every
        open watch ends as the API server restart would. A client re-watching from the
        resourceVersion it had reached is then ahead of the server (504 too large, see the
        module doc); a new counter value may later name a different change than before."""
        self.rv = backup.rv
        self._objects = dict(backup.objects)
        self._history = [c for c in self._history if c.rv <= backup.rv]
        self._pinned.clear()
        self.end_watches()

    # -- internals ---------------------------------------------------------------------

    def _resource(self, plural: str) -> FakeResource:
        return next(r for r in SERVED.values() if r.plural == plural)

    def _key(self, plural: str, name: str, namespace: str) -> tuple[str, str, str]:
        return (plural, namespace if self._resource(plural).namespaced else "", name)

    def _record(self, plural: str, type_: str, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = self._key(plural, obj["metadata"]["name"], obj["metadata"].get("namespace", ""))
        if type_ == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        self._history.append(_Change(self.rv, plural, type_, copy.deepcopy(obj)))
        self._notify()
        return obj

    def _notify(self) -> None:
        self._wakeup.set()
        self._wakeup = asyncio.Event()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/debug/truth", self._truth)
        app.router.add_get("/api/{version}", self._discovery)
        app.router.add_get("/apis/{group}/{version}", self._discovery)
        app.router.add_get("/api/{version}/{plural}", self._collection)
        app.router.add_get("/apis/{group}/{version}/{plural}", self._collection)
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            for scope in ("", "/namespaces/{namespace}"):
                app.router.add_route("*", f"{prefix}{scope}/{{plural}}/{{name}}", self._object)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @staticmethod
    def _group_version(request: web.Request) -> str:
        group = request.match_info.get("group")
        version = request.match_info["version"]
        return f"{group}/{version}" if group else version

    async def _discovery(self, request: web.Request) -> web.Response:
        group_version = self._group_version(request)
        resources = [
            {"name": r.plural, "kind": r.kind, "namespaced": r.namespaced, "verbs": VERBS}
            for r in RESOURCES
            if r.group_version == group_version
        ]
        if not resources:
            return _json(_status(404, "NotFound", "the server could not find it"), 404)
        body = {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources}
        return _json(body)

    async def _collection(self, request: web.Request) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization", ""))
        resource = SERVED.get((self._group_version(request), request.match_info["plural"]))
        if resource is None:
            return _json(_status(404, "NotFound", "the server could not find it"), 404)
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, resource)
        return self._list(resource, dict(request.query))

    def _list(self, resource: FakeResource, query: dict[str, str]) -> web.Response:
        self.list_requests.append((resource.plural, query))
        wanted = _parse_selector(query.get("labelSelector", ""))
        if wanted is None:
            return _refuse(400, "BadRequest", f"unable to parse {query['labelSelector']!r}")
        token = query.get("continue", "")
        if token:
            rv_text, offset_text, list_id = ([*token.split("/"), "", "", ""])[:3]
            pinned = self._pinned.get(list_id)
            expired = self._expire_next_continue or int(rv_text) < self._compacted_rv
            self._expire_next_continue = False
            if expired or pinned is None:
                return _json(_status(410, "Expired", "continue token too old"), 410)
            offset = int(offset_text)
        else:
            list_id, offset = str(next(self._list_ids)), 0
            pinned = _PinnedList(self.rv, self._matching(resource, wanted))
        limit = int(query.get("limit", "0")) or len(pinned.items)
        page = [_list_item(obj) for obj in pinned.items[offset : offset + limit]]
        meta = {"resourceVersion": str(pinned.rv)}
        if offset + len(page) < len(pinned.items):
            meta["continue"] = f"{pinned.rv}/{offset + len(page)}/{list_id}"
            self._pinned[list_id] = pinned
            self._pinned.move_to_end(list_id)
            while len(self._pinned) > PINNED_LISTS:
                self._pinned.popitem(last=False)
        else:
            self._pinned.pop(list_id, None)
        kind = f"{resource.kind}List"
        body = {"kind": kind, "apiVersion": resource.group_version, "metadata": meta}
        return _json(body | {"items": page})

    def _matching(self, resource: FakeResource, wanted: dict[str, str]) -> list[Obj]:
        """References to the stored objects a list selects, in key order (never mutated)."""
        return [
            self._objects[key]
            for key in sorted(k for k in self._objects if k[0] == resource.plural)
            if all(_labels(self._objects[key]).get(k) == v for k, v in wanted.items())
        ]

    async def _object(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization", ""))
        resource = SERVED.get((self._group_version(request), request.match_info["plural"]))
        namespace = request.match_info.get("namespace", "")
        if resource is None or resource.namespaced != bool(namespace):
            return _not_served()
        name = request.match_info["name"]
        key = (resource.plural, namespace, name)
        if request.method == "PATCH":
            return await self._apply(request, resource, namespace, name)
        if request.method == "DELETE":
            self.delete_requests.append((resource.plural, dict(request.query)))
        elif request.method != "GET":
            return _refuse(405, "MethodNotAllowed", f"{request.method} is not supported")
        stored = self._objects.get(key)
        if stored is None:
            return _refuse(404, "NotFound", f'{resource.plural} "{name}" not found')
        if request.method == "DELETE":
            return _json(self._record(resource.plural, "DELETED", copy.deepcopy(stored)))
        return _json(stored)

    async def _apply(
        self, request: web.Request, resource: FakeResource, namespace: str, name: str
    ) -> web.Response:
        """Server-side apply, as far as this fake goes: a new object takes the patch; an
        existing one gets every top-level field the patch has (`spec`, `data`...) replaced,
        and its labels and annotations too if the patch has them. No field ownership, hence
        no conflicts; an apply that changes nothing writes nothing, as on a real server."""
        query = dict(request.query)
        self.apply_requests.append((resource.plural, query, request.content_type))
        manager = query.get("fieldManager", "")
        try:
            patch = yaml.safe_load(await request.read())
        except yaml.YAMLError as exc:
            return _refuse(400, "BadRequest", f"the body is no YAML: {exc}")
        refusal = _apply_refusal(request.content_type, manager, resource, namespace, name, patch)
        if refusal is not None:
            return refusal
        stored = self._objects.get((resource.plural, namespace, name))
        if stored is None:
            created: Obj = {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": _now()}
            stored = {"apiVersion": resource.group_version, "kind": resource.kind}
            stored["metadata"] = created | ({"namespace": namespace} if namespace else {})
        merged = copy.deepcopy(stored)
        merged.update({k: copy.deepcopy(v) for k, v in patch.items() if k not in TYPE_AND_OWNED})
        for field in ("labels", "annotations"):
            if field in patch["metadata"]:
                merged["metadata"][field] = copy.deepcopy(patch["metadata"][field])
        managers = merged["metadata"].setdefault("managedFields", [])
        if not any(m["manager"] == manager and m["operation"] == "Apply" for m in managers):
            entry = {"manager": manager, "operation": "Apply", "apiVersion": resource.group_version}
            managers.append(entry | {"time": _now(), "fieldsType": "FieldsV1"})
        if merged == stored:
            return _json(stored)
        created_now = "resourceVersion" not in stored["metadata"]
        merged = self._record(resource.plural, "ADDED" if created_now else "MODIFIED", merged)
        return _json(merged, 201 if created_now else 200)

    async def _watch(self, request: web.Request, resource: FakeResource) -> web.StreamResponse:
        start_rv = int(request.query.get("resourceVersion") or self.rv)
        self.watch_requests.append((resource.plural, start_rv))
        expired = _status(410, "Expired", f"too old resource version: {start_rv}")
        if start_rv < self._compacted_rv and self.expired_as_http:
            return _json(expired, 410)
        if not await self._reached(start_rv):
            return _json(_too_large(start_rv, self.rv), 504)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        timeout_s = float(request.query.get("timeoutSeconds", "3600"))
        deadline = asyncio.get_running_loop().time() + timeout_s
        position = bisect.bisect_right([c.rv for c in self._history], start_rv)
        try:
            await self._stream(response, resource, start_rv, position, bookmarks, deadline)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away (an agent killed by a test, say)
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        resource: FakeResource,
        start_rv: int,
        position: int,
        bookmarks: bool,
        deadline: float,
    ) -> None:
        """Send history from `position` on until the watch ends, expires or times out."""
        expired = _status(410, "Expired", f"too old resource version: {start_rv}")
        expire_epoch, end_epoch = self._expire_epoch, self._end_epoch
        lost = start_rv < self._compacted_rv
        while True:
            wakeup = self._wakeup
            if lost or self._expire_epoch != expire_epoch:
                await response.write(orjson.dumps({"type": "ERROR", "object": expired}) + b"\n")
                return
            if not self._paused:
                for change in self._history[position:]:
                    event = self._event_for(change, resource, bookmarks)
                    if event is not None:
                        await response.write(orjson.dumps(event) + b"\n")
                position = len(self._history)
            if self._end_epoch != end_epoch:
                return
            try:
                async with asyncio.timeout_at(deadline):
                    await wakeup.wait()
            except TimeoutError:
                return

    async def _reached(self, rv: int) -> bool:
        """Whether the counter reaches `rv` within TOO_LARGE_WAIT_S."""
        try:
            async with asyncio.timeout(TOO_LARGE_WAIT_S):
                while self.rv < rv:
                    await self._wakeup.wait()
        except TimeoutError:
            return False
        return True

    async def _truth(self, request: web.Request) -> web.Response:
        return _json(truth_document(self.rv, self.truth()))

    @staticmethod
    def _event_for(change: _Change, resource: FakeResource, bookmarks: bool) -> Obj | None:
        if change.type == "BOOKMARK":
            if not bookmarks:
                return None
            obj = {
                "apiVersion": resource.group_version,
                "kind": resource.kind,
                "metadata": {"resourceVersion": str(change.rv)},
            }
            return {"type": "BOOKMARK", "object": obj}
        if change.plural != resource.plural:
            return None
        return {"type": change.type, "object": change.obj}


def _list_item(obj: Obj) -> Obj:
    item = copy.deepcopy(obj)
    item.pop("apiVersion", None)  # as in real Kubernetes, list items lack these
    item.pop("kind", None)
    return item


def _too_large(rv: int, current: int) -> Obj:
    message = f"Too large resource version: {rv}, current: {current}"
    status = _status(504, "Timeout", message)
    cause = {"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}
    return status | {"details": {"causes": [cause], "retryAfterSeconds": 1}}


def _apply_refusal(
    content_type: str, manager: str, resource: FakeResource, namespace: str, name: str, patch: Any
) -> web.Response | None:
    """What a real API server says to an apply it will not do (status, reason as there)."""
    if content_type != APPLY_PATCH:
        return _refuse(415, "UnsupportedMediaType", f"{content_type} is no apply patch")
    if not manager:
        message = 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
        return _refuse(422, "Invalid", message + "is required for apply patch")
    meta = patch.get("metadata") if isinstance(patch, dict) else None
    if not isinstance(patch, dict) or not isinstance(meta, dict):
        return _refuse(400, "BadRequest", "the body is no object with metadata")
    if (patch.get("apiVersion"), patch.get("kind")) != (resource.group_version, resource.kind):
        return _refuse(400, "BadRequest", f"the body is no {resource.kind}")
    if meta.get("name") != name:
        return _refuse(400, "BadRequest", "the name of the object does not match the URL")
    if resource.namespaced and meta.get("namespace", namespace) != namespace:
        return _refuse(400, "BadRequest", "the namespace of the object does not match the URL")
    if "managedFields" in meta:
        return _refuse(400, "BadRequest", "metadata.managedFields must be nil")
    if len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        message = f'{resource.kind} "{name}" is invalid: metadata.name: Invalid value: "{name}"'
        return _refuse(422, "Invalid", message + ": a lowercase RFC 1123 subdomain is needed")
    return None
