"""A `ClusterSource` backed by a real Kubernetes API server: list, then watch, per kind.

It is a `WorkloadTarget` too: workloads are server-side applied (see kube_write), and what
is applied flows back through the watches of the configured kinds like any other change.

Contract, per kind, while `run` is awaited (client-go's reflector loop):
- the first report is a full listing (`sink.listed`); every change after it follows as
  `sink.event`, in the order the API server sent it;
- a watch that ends normally is resumed from the last resourceVersion seen (of an event or a
  bookmark), so nothing is reported twice and nothing is skipped;
- a watch the server expired (410 Gone) cannot be resumed: the kind is listed again and the
  listing reported through `sink.listed`, whose replace semantics repair missed deletes;
- a watch from a resourceVersion the server has not reached (504 too large: etcd restored
  from a backup) is not waited out either: the kind is listed again, as client-go does;
- transport and server errors never end `run`: they are logged and retried with capped,
  jittered exponential backoff, resuming from the last resourceVersion;
- objects that fail `object_ref` validation are logged and skipped.
Kinds are independent: a kind the server does not serve is retried without holding up the rest.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
import orjson
from kubernetes_asyncio.client import ApiClient

from app.agent.sources.base import Listing, SourceSink
from app.agent.sources.kube_api import (
    KubeApi,
    KubeApiError,
    ResourceExpired,
    ResourceVersionTooLarge,
    error_from_status,
    load_configuration,
)
from app.agent.sources.kube_write import KubeWriter
from app.backoff import Backoff
from app.informer.objects import (
    EventType,
    InvalidObject,
    KindKey,
    KubeObject,
    WatchEvent,
    object_ref,
    parse_resource_version,
)

logger = logging.getLogger(__name__)

RETRYABLE: tuple[type[Exception], ...] = (KubeApiError, aiohttp.ClientError, OSError, ValueError)
"""What a reflector retries: server refusals, transport failures (TimeoutError is an OSError)
and garbled bodies (ValueError covers bad JSON and a listing without a valid resourceVersion)."""

FIELD_MANAGER = "transport-informer"
"""Who owns, for server-side apply, the fields of the objects workloads deliver."""

QUIET_WATCH_S = 1.0
"""A watch that ends normally sooner than this, having delivered nothing, is retried after a
backoff delay rather than at once, so a misbehaving server is not hammered."""


class KubernetesSource:
    """Lists and watches `kinds` through a caller-owned `ApiClient` (see the module doc)."""

    def __init__(
        self,
        *,
        kinds: Sequence[KindKey],
        api_client: ApiClient,
        page_size: int = 500,
        watch_timeout_s: int = 300,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        if not kinds:
            raise ValueError("a KubernetesSource needs at least one kind")
        if page_size < 1 or watch_timeout_s < 1:
            raise ValueError("page_size and watch_timeout_s must be positive")
        self._kinds = tuple(dict.fromkeys(kinds))
        self._api = KubeApi(api_client)
        self._page_size = page_size
        self._watch_timeout_s = watch_timeout_s
        self._writer = KubeWriter(self._api, field_manager=field_manager, page_size=page_size)

    @classmethod
    @asynccontextmanager
    async def from_kubeconfig(
        cls,
        path: str | None,
        kinds: Sequence[KindKey],
        *,
        page_size: int = 500,
        watch_timeout_s: int = 300,
        field_manager: str = FIELD_MANAGER,
    ) -> AsyncIterator[KubernetesSource]:
        """A source on its own ApiClient, closed on exit (`path=None`: in-cluster or default)."""
        configuration = await load_configuration(path)
        async with ApiClient(configuration) as api_client:
            yield cls(
                kinds=kinds,
                api_client=api_client,
                page_size=page_size,
                watch_timeout_s=watch_timeout_s,
                field_manager=field_manager,
            )

    @property
    def kinds(self) -> tuple[KindKey, ...]:
        return self._kinds

    @property
    def reports_initial_listing(self) -> bool:
        return True  # every kind's reflector lists before it watches

    async def list(self, kind: KindKey) -> Listing:
        """Every valid object of `kind` across all namespaces, fetched `page_size` at a time.

        Items get the apiVersion and kind the API leaves out of list items. A continue token
        that expires mid-way restarts the list, since pages from two snapshots do not mix.
        """
        resource = await self._api.resource(kind)
        items, resource_version = await self._api.list_all(resource, page_size=self._page_size)
        valid = [item for item in items if _is_valid(resource.kind, item)]
        return Listing(resource.kind, valid, resource_version)

    async def run(self, sink: SourceSink) -> None:
        """Keep `sink` in step with every kind until cancelled; errors are retried, not raised."""
        async with asyncio.TaskGroup() as tasks:
            for kind in self._kinds:
                tasks.create_task(self._reflect(kind, sink), name=f"reflect {kind}")

    # -- WorkloadTarget ------------------------------------------------------------------

    async def apply_object(self, obj: KubeObject) -> KubeObject:
        """Server-side apply `obj` as this source's field manager; the object as stored."""
        return await self._writer.apply(obj)

    async def delete_object(self, kind: KindKey, namespace: str, name: str) -> bool:
        return await self._writer.delete(kind, namespace, name)

    async def get_object(self, kind: KindKey, namespace: str, name: str) -> KubeObject | None:
        return await self._writer.get(kind, namespace, name)

    async def labelled(self, key: str, value: str) -> builtins.list[tuple[KindKey, str, str]]:
        """Objects labelled `key=value` of the configured kinds and of every kind applied."""
        return await self._writer.labelled(self._kinds, key, value)

    async def _reflect(self, kind: KindKey, sink: SourceSink) -> None:
        backoff = Backoff()
        cursor: _WatchCursor | None = None  # None: the next step is a (re)list
        while True:
            try:
                if cursor is None:
                    listing = await self.list(kind)
                    sink.listed(listing)
                    backoff.reset()
                    cursor = _WatchCursor(kind, sink, listing.resource_version)
                await self._watch(cursor, backoff)
            except ResourceExpired as exc:
                logger.info("watching %s: %s; listing again", kind, exc)
                cursor = None
            except ResourceVersionTooLarge as exc:
                logger.warning(
                    "watching %s: %s: the server's history is behind ours (an etcd restore?); "
                    "listing again",
                    kind,
                    exc,
                )
                cursor = None
            except RETRYABLE as exc:
                delay = backoff.next_delay()
                logger.warning("%s: %r; retrying in %.1f s", kind, exc, delay)
                await asyncio.sleep(delay)

    async def _watch(self, cursor: _WatchCursor, backoff: Backoff) -> None:
        """One watch stream from the cursor's resourceVersion, until the server ends it.

        Backoff is reset by the first line received, not by connecting, so a server that
        accepts watches and ends them at once is retried ever more slowly.
        """
        resource = await self._api.resource(cursor.kind)
        query = [
            ("watch", "1"),
            ("resourceVersion", str(cursor.resource_version)),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self._watch_timeout_s)),
        ]
        # The server ends the watch after timeoutSeconds; allow it a margin to do so.
        idle_timeout_s = self._watch_timeout_s + 30
        started = time.monotonic()
        delivered = False
        stream = self._api.stream(resource.collection_path, query, idle_timeout_s=idle_timeout_s)
        async with stream as lines:
            async for line in lines:
                if line.strip():
                    if not delivered:
                        delivered = True
                        backoff.reset()
                    cursor.handle(orjson.loads(line))
        if not delivered and time.monotonic() - started < QUIET_WATCH_S:
            await asyncio.sleep(backoff.next_delay())


class _WatchCursor:
    """Where the watches of one kind resume; reports the events that move it.

    It outlives each watch stream: a stream broken by a transport error resumes from the
    last event or bookmark delivered. Only an expiry (410) discards it, forcing a relist.
    """

    def __init__(self, kind: KindKey, sink: SourceSink, resource_version: int) -> None:
        self.kind = kind
        self.resource_version = resource_version
        self._sink = sink

    def handle(self, event: object) -> None:
        """Report one decoded watch event; raise ResourceExpired/KubeApiError on ERROR."""
        fields = event if isinstance(event, dict) else {}
        type_, obj = fields.get("type"), fields.get("object")
        if type_ == "ERROR":
            raise error_from_status(obj)
        if not isinstance(obj, dict):
            logger.warning("watching %s: %s event without an object; skipped", self.kind, type_)
            return
        try:
            if type_ == "BOOKMARK":
                meta = obj.get("metadata")
                rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
                self.resource_version = parse_resource_version(rv)
            elif isinstance(type_, str) and type_ in EventType.__members__:
                _fill_type_meta(self.kind, obj)
                watch_event = WatchEvent.of(type_, obj)
                self._sink.event(watch_event)
                self.resource_version = watch_event.ref.resource_version
            else:
                logger.warning("watching %s: unknown event type %r; skipped", self.kind, type_)
        except InvalidObject as exc:
            logger.warning("watching %s: invalid object skipped: %s", self.kind, exc)


def _fill_type_meta(kind: KindKey, obj: KubeObject) -> None:
    obj.setdefault("apiVersion", kind.api_version)
    obj.setdefault("kind", kind.kind)


def _is_valid(kind: KindKey, item: object) -> bool:
    if not isinstance(item, dict):
        logger.warning("listing %s: non-object item skipped", kind)
        return False
    _fill_type_meta(kind, item)
    try:
        object_ref(item)
    except InvalidObject as exc:
        logger.warning("listing %s: invalid object skipped: %s", kind, exc)
        return False
    return True
