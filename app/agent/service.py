"""The agent service: one cluster's source -> conflating buffer -> MQTT, in protocol order.

Ordering: one publisher sends, in this priority, control messages (hello, snapshot chunks,
digests) and then batches of pending watch events. A digest is computed when it is sent,
from the `PublishedIndex`, so it describes exactly the stream before it.

Lifecycle: on start the agent relists every kind (the hub gets snapshots with replace
semantics); on every (re)connect it says hello and sends its digests, so the hub relists
only kinds that drifted; periodically it sends heartbeats and digests. While the broker is
away, changes conflate per object in bounded memory. Leaving says goodbye (`offline`); a
crash is announced by the broker through the last will.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import uuid
from collections import deque
from collections.abc import Callable
from types import TracebackType

import orjson

from app import __version__
from app.agent.buffer import PendingChanges, PublishedIndex, SendPace
from app.agent.sources.base import ClusterSource, Listing, WorkloadTarget
from app.agent.workloads import WorkloadRunner
from app.informer.objects import (
    InvalidObject,
    KindKey,
    KubeObject,
    ObjectRef,
    WatchEvent,
    object_json,
)
from app.transport import cloudevents, topics
from app.transport.cloudevents import (
    ENVELOPE_OVERHEAD,
    MAX_MESSAGE_BYTES,
    CloudEvent,
    MalformedMessage,
)
from app.transport.messages import (
    Hello,
    HubMessage,
    MessageType,
    ResyncRequest,
    WorkloadApply,
    WorkloadRemove,
    WorkloadStatus,
    WorkloadStatusResync,
    digest_data,
    hello_data,
    parse_hub_message,
    workload_resync_data,
    workload_status_data,
)
from app.transport.mqtt import LinkOptions, MqttLink, Will

log = logging.getLogger(__name__)

MAX_OBJECT_BYTES = MAX_MESSAGE_BYTES - 2 * ENVELOPE_OVERHEAD
"""The largest object (as JSON) that fits one message the hub accepts."""
Outgoing = bytes | Callable[[], bytes]
"""A message, or a function making it at send time (digests must see the sent stream)."""


class Agent:
    def __init__(
        self,
        *,
        cluster: str,
        source: ClusterSource,
        broker_url: str,
        labels: dict[str, str],
        hub_source: str = topics.DEFAULT_SOURCE,
        heartbeat_s: float = 5.0,
        resync_s: float = 30.0,
        max_pending: int = 200_000,
        chunk_bytes: int = 128 * 1024,
        max_inflight: int = 16,
        send_messages_per_s: float = 500.0,
        send_bytes_per_s: float = 3 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.cluster = topics.check_name(cluster)
        self.source = source
        self.labels = labels
        self._hub_source = hub_source
        self.heartbeat_s = heartbeat_s
        self.resync_s = resync_s
        self.chunk_bytes = chunk_bytes
        self.pending = PendingChanges(max_pending)
        self._held = PendingChanges(max_pending)
        """Events of kinds being listed: none may reach the hub before the listing's chunks
        (it replaces what the hub holds), so they wait here and follow it."""
        self._highest: dict[KindKey, int] = {}
        """Per kind, the highest resourceVersion seen: a later listing below it means the
        cluster's history went back."""
        self.pace = SendPace(send_messages_per_s, send_bytes_per_s)
        self.published = PublishedIndex()
        self._control: deque[tuple[KindKey | None, Outgoing]] = deque()
        self._wake = asyncio.Event()
        self._relist: set[KindKey] = set()
        self._listing: set[KindKey] = set()
        self._awaiting: set[KindKey] = set()
        """Kinds whose first listing the source will report itself."""
        self._relist_wake = asyncio.Event()
        self._topic = topics.agent_events(hub_source, cluster)
        will = Will(self._topic, self._message(MessageType.OFFLINE, {"reason": "connection lost"}))
        # With a certificate the broker takes the client id from its CN, the cluster's name
        # (use_username_as_clientid); saying the same here keeps logs honest.
        self.link = MqttLink(
            LinkOptions(
                url=broker_url,
                client_id=cluster if tls is not None else f"ti-agent-{cluster}",
                tls=tls,
                subscriptions=(topics.source_events(hub_source, cluster),),
                will=will,
                max_inflight=max_inflight,
                keepalive_s=max(5, int(heartbeat_s * 2)),
            ),
            self._on_request,
        )
        self.link.on_connect = self._on_connect
        self._tasks: asyncio.TaskGroup | None = None
        self.workloads = (
            WorkloadRunner(source, self._send_status)
            if isinstance(source, WorkloadTarget)
            else None
        )
        """Workload delivery, for sources that can apply objects."""
        self.sent_messages = 0
        self.oversized = 0
        self.unsendable = 0
        """Objects never sent because the hub would refuse them (nested too deep)."""
        self.instance = uuid.uuid4().hex

    # -- SourceSink ----------------------------------------------------------------------

    def event(self, event: WatchEvent) -> None:
        kind = event.ref.kind_key
        self._highest[kind] = max(self._highest.get(kind, 0), event.ref.resource_version)
        if kind in self._listing:
            self._held.add(event)  # newer than the listing under way: sent after its chunks
        else:
            self.pending.add(event)
            self._wake.set()

    def listed(self, listing: Listing) -> None:
        self._awaiting.discard(listing.kind)
        self._enqueue_snapshot(listing, self._highest.get(listing.kind, 0))

    # -- messages ------------------------------------------------------------------------

    def _message(self, type_: MessageType, data: dict[str, object]) -> bytes:
        return cloudevents.encode(CloudEvent(type_, f"agent/{self.cluster}", self.cluster, data))

    def _send(self, item: Outgoing, *, first: bool = False, kind: KindKey | None = None) -> None:
        """Queue a control message; `kind` tags snapshot chunks so a newer listing of the
        kind can drop them (the queue holds at most one listing per kind)."""
        (self._control.appendleft if first else self._control.append)((kind, item))
        self._wake.set()

    def _hello(self) -> bytes:
        hello = Hello(self.labels, self.source.kinds, self.heartbeat_s, __version__, self.instance)
        return self._message(MessageType.HELLO, hello_data(hello))

    def _digest(self) -> bytes:
        """Digests of the kinds not being relisted (their snapshot will settle them)."""
        unsettled = self._relist | self._listing | self._awaiting
        settled = tuple(k for k in self.source.kinds if k not in unsettled)
        return self._message(MessageType.DIGEST, digest_data(self.published.digests(settled)))

    def _encode(self, obj: KubeObject, ref: ObjectRef) -> bytes | None:
        """The object as JSON, or None if the hub would refuse it (too large for one
        message, or nested deeper than `MAX_OBJECT_DEPTH`): it is never sent and so never
        recorded as published, and both sides' digests leave it out."""
        try:
            blob = object_json(obj, ref)
        except InvalidObject as exc:
            self.unsendable += 1
            log.warning("%s: %s; not sent", self.cluster, exc)
            return None
        if len(blob) <= MAX_OBJECT_BYTES:
            return blob
        self.oversized += 1
        log.warning(
            "%s: %s %s/%s is %d bytes, over the %d-byte limit; not sent",
            self.cluster,
            ref.kind,
            ref.namespace,
            ref.name,
            len(blob),
            MAX_OBJECT_BYTES,
        )
        return None

    def _enqueue_snapshot(self, listing: Listing, seen_before: int) -> None:
        """Queue a listing as chunks, flagged `replace`: it is the cluster's truth. It
        supersedes pending events older than it and any chunks of an earlier listing of the
        kind still queued; events held back while it was listed follow it.

        A listing older than an event seen before it was asked for (`seen_before`) means the
        cluster's history went back (re-created, restored from an etcd backup): every
        pending event of the kind is from the lost history and is dropped."""
        kind, rv = listing.kind, listing.resource_version
        if rv < seen_before:
            log.warning(
                "%s: %s listed at resourceVersion %d, below %d seen before: the cluster's "
                "history went back; dropping pending changes of the kind",
                self.cluster,
                kind,
                rv,
                seen_before,
            )
            self.pending.drop_listed(kind, 2**63)
            self._held.drop_listed(kind, 2**63)
            self._highest[kind] = rv
        self.pending.drop_listed(kind, rv)
        self._held.drop_listed(kind, rv)
        self._release_held(kind)
        self._control = deque(q for q in self._control if q[0] != kind)
        items: list[WatchEvent] = []
        encoded: list[bytes] = []
        for obj in listing.items:
            try:
                item = WatchEvent.of("ADDED", obj)
            except InvalidObject as exc:
                self.unsendable += 1
                log.warning("%s: listing %s: %s; not sent", self.cluster, kind, exc)
                continue
            blob = self._encode(obj, item.ref)
            if blob is not None:
                items.append(item)
                encoded.append(blob)
        self.published.replace(kind, items)
        head = {
            "snapshotId": uuid.uuid4().hex,
            "apiVersion": kind.api_version,
            "kind": kind.kind,
            "resourceVersion": str(rv),
            "replace": True,
        }
        chunks: list[list[bytes]] = [[]]
        size = 0
        for blob in encoded:
            if chunks[-1] and size + len(blob) > self.chunk_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(blob)
            size += len(blob) + 1
        for index, chunk in enumerate(chunks):
            meta = orjson.dumps({**head, "chunk": index, "last": index == len(chunks) - 1})
            data = meta[:-1] + b',"items":[' + b",".join(chunk) + b"]}"
            self._send(
                cloudevents.encode_raw(
                    MessageType.SNAPSHOT, f"agent/{self.cluster}", self.cluster, data
                ),
                kind=kind,
            )

    def _next_events_message(self) -> bytes | None:
        parts: list[bytes] = []
        size = ENVELOPE_OVERHEAD
        for event in self.pending.take():
            body = self._encode(event.object, event.ref)
            if body is None:
                continue
            blob = b'{"type":"' + event.type.encode() + b'","object":' + body + b"}"
            if parts and size + len(blob) > self.chunk_bytes:
                self.pending.put_back(event)
                break
            parts.append(blob)
            size += len(blob) + 1
            self.published.record(event)
        if not parts:
            return None
        data = b'{"events":[' + b",".join(parts) + b"]}"
        return cloudevents.encode_raw(
            MessageType.WATCH_EVENTS, f"agent/{self.cluster}", self.cluster, data
        )

    # -- hub requests and connection -----------------------------------------------------

    def _on_connect(self) -> None:
        if self.pending.overflowed:
            log.warning(
                "%s: change buffer overflowed while away; relisting everything", self.cluster
            )
            self.pending.clear()
            self.request_relist(self.source.kinds)
        self._send(self._hello(), first=True)
        if self.workloads is not None:  # the spec resync: the hub answers with what is newer
            held = workload_resync_data(self.workloads.held_versions())
            self._send(self._message(MessageType.WORKLOAD_RESYNC, held))
        # after anything already queued (snapshot chunks): it must describe what precedes it
        self._send(self._digest)

    async def _on_request(self, topic: str, payload: bytes) -> None:
        """Serve one hub request. Nothing a request holds may stop the agent: an unexpected
        error is logged once and, for an apply, answered (and held) as a failed status, so
        the hub shows it and stops resending; other workloads go on being served."""
        try:
            request = parse_hub_message(cloudevents.decode(payload))
        except MalformedMessage as exc:
            log.warning("%s: ignoring bad request on %s: %s", self.cluster, topic, exc)
            return
        except Exception:  # a parser gap must not stop the agent either
            log.exception("%s: ignoring request on %s that does not parse", self.cluster, topic)
            return
        try:
            await self._serve(request)
        except Exception as exc:
            what = getattr(request, "workload", "")
            log.exception("%s: serving %s %s failed", self.cluster, type(request).__name__, what)
            if isinstance(request, WorkloadApply) and self.workloads is not None:
                await self.workloads.hold_failed(request, f"applying failed: {exc!r}")

    async def _serve(self, request: HubMessage) -> None:
        match request:
            case ResyncRequest():
                self._relist_requested(request)
            case WorkloadApply() if self.workloads is not None:
                await self.workloads.apply(request)
            case WorkloadRemove() if self.workloads is not None:
                await self.workloads.remove(request)
            case WorkloadStatusResync():
                if self.workloads is not None:
                    self.workloads.resend_differing(request.hashes)
            case WorkloadApply() | WorkloadRemove():
                self._send_status(
                    WorkloadStatus(
                        request.workload,
                        request.version,
                        isinstance(request, WorkloadRemove),
                        [],
                        {},
                        f"the {type(self.source).__name__} source cannot apply workloads",
                        "",
                    )
                )

    def _send_status(self, status: WorkloadStatus) -> None:
        self._send(self._message(MessageType.WORKLOAD_STATUS, workload_status_data(status)))

    def _relist_requested(self, request: ResyncRequest) -> None:
        if not request.kinds:
            self._send(self._hello())
        watched = tuple(k for k in request.kinds if k in self.source.kinds)
        self.request_relist(watched if request.kinds else self.source.kinds)

    def relabel(self, labels: dict[str, str]) -> None:
        """The cluster's labels changed: tell the hub (placements are re-evaluated)."""
        self.labels = labels
        self._send(self._hello())

    def _release_held(self, kind: KindKey) -> None:
        for event in self._held.take_kind(kind):
            self.pending.add(event)
        if self._held.overflowed:  # changes were lost while listing: list again
            self._held.clear()
            self.request_relist(self.source.kinds)
        self._wake.set()

    def request_relist(self, kinds: tuple[KindKey, ...]) -> None:
        self._relist.update(kinds)
        self._relist_wake.set()

    # -- loops ---------------------------------------------------------------------------

    async def _publisher(self) -> None:
        while True:
            await self.link.wait_connected()
            if self._control:
                _, item = self._control.popleft()
                payload = item() if callable(item) else item
            elif (events := self._next_events_message()) is not None:
                payload = events
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.pace.wait(len(payload))
            await self.link.publish(self._topic, payload)
            self.sent_messages += 1

    async def _relister(self) -> None:
        while True:
            await self._relist_wake.wait()
            self._relist_wake.clear()
            self._listing, self._relist = self._relist, set()
            for kind in sorted(self._listing, key=str):
                seen_before = self._highest.get(kind, 0)
                try:
                    self._enqueue_snapshot(await self.source.list(kind), seen_before)
                except Exception as exc:
                    log.warning("%s: listing %s failed (%s); retrying", self.cluster, kind, exc)
                    self._release_held(kind)
                    self.request_relist((kind,))
                    await asyncio.sleep(1)
                finally:
                    self._listing.discard(kind)

    def _resync_period(self) -> float:
        """The resync period with ±20% jitter: agents started together (a hub or broker
        restart reconnects them all at once) must not all send digests in the same second."""
        return self.resync_s * random.uniform(0.8, 1.2)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_digest = loop.time() + self._resync_period()
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if not self.link.connected:
                continue
            self._send(self._message(MessageType.HEARTBEAT, {}))
            if loop.time() >= next_digest:
                self._send(self._digest)
                next_digest = loop.time() + self._resync_period()

    async def __aenter__(self) -> Agent:
        if self.source.reports_initial_listing:
            self._awaiting = set(self.source.kinds)
        else:
            self.request_relist(self.source.kinds)
        await self.link.__aenter__()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._loops = [
            self._tasks.create_task(loop)
            for loop in (
                self._publisher(),
                self._relister(),
                self._ticker(),
                self.source.run(self),
                *([self.workloads.run()] if self.workloads else []),
            )
        ]
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._loops:
            task.cancel()
        assert self._tasks is not None
        try:
            await self._tasks.__aexit__(None, None, None)
        finally:
            await self._goodbye()
            await self.link.close()

    async def _goodbye(self) -> None:
        if not self.link.connected:
            return
        try:
            async with asyncio.timeout(3):
                await self.link.publish(
                    self._topic, self._message(MessageType.OFFLINE, {"reason": "agent stopped"})
                )
                await self.link.flush()
        except TimeoutError:
            log.warning("%s: could not say goodbye; the last will will", self.cluster)
