"""The message kinds of protocol v1 and their payloads (the CloudEvent `data`).

Event types follow OCM's `<reverse-group>.<version>.<resource>.<spec|status>.<action>`:

    agent -> hub   clusters.status.hello            labels, kinds, heartbeat period
                   clusters.status.heartbeat        liveness (the broker's last will says offline)
                   clusters.status.offline          graceful goodbye, or the last will
                   resources.status.update_request  a batch of watch events
                   resources.status.resync_response one chunk of a kind's listing
                   resources.status.digest          count + hash per kind, for resync
    hub -> agent   resources.status.resync_request  relist these kinds

`parse` turns a checked envelope into one of the dataclasses below or raises
MalformedMessage with the reason; nothing is applied from a message that fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from app.informer.digest import KindDigest
from app.informer.objects import EventType, InvalidObject, KindKey, KubeObject, WatchEvent
from app.transport.cloudevents import CloudEvent, MalformedMessage
from app.transport.topics import check_name

EVENT_TYPES = frozenset(t.value for t in EventType)

PROTOCOL_VERSION = 1
_PREFIX = "io.transport-informer.v1"
HEARTBEAT_RANGE_S = (0.1, 3600.0)
"""`heartbeatSeconds` a hello may announce: the hub's offline detection and registry leases
are multiples of it, so 0 would flap and 1e308 would keep a silent cluster online forever."""


class MessageType(StrEnum):
    HELLO = f"{_PREFIX}.clusters.status.hello"
    HEARTBEAT = f"{_PREFIX}.clusters.status.heartbeat"
    OFFLINE = f"{_PREFIX}.clusters.status.offline"
    WATCH_EVENTS = f"{_PREFIX}.resources.status.update_request"
    SNAPSHOT = f"{_PREFIX}.resources.status.resync_response"
    DIGEST = f"{_PREFIX}.resources.status.digest"
    RESYNC_REQUEST = f"{_PREFIX}.resources.status.resync_request"
    WORKLOAD_APPLY = f"{_PREFIX}.workloads.spec.update_request"
    WORKLOAD_REMOVE = f"{_PREFIX}.workloads.spec.delete_request"
    WORKLOAD_STATUS = f"{_PREFIX}.workloads.status.update_request"
    WORKLOAD_RESYNC = f"{_PREFIX}.workloads.spec.resync_request"
    WORKLOAD_STATUS_RESYNC = f"{_PREFIX}.workloads.status.resync_request"


@dataclass(frozen=True, slots=True)
class Hello:
    labels: dict[str, str]
    kinds: tuple[KindKey, ...]
    heartbeat_s: float
    agent_version: str
    instance: str = ""
    """Random per agent process: a new value means a restarted agent, whose half-sent
    snapshots will never be finished; the same value means a mere reconnect."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pass


@dataclass(frozen=True, slots=True)
class Offline:
    reason: str


@dataclass(frozen=True, slots=True)
class RefusedObject:
    """One event or snapshot item left out of a message whose other objects are applied.

    `reason` is one of `bad_object`, `bad_event_type`, `wrong_kind` (protocol section 7);
    `item` is what was received, for the dead-letter record."""

    reason: str
    detail: str
    item: object


@dataclass(frozen=True, slots=True)
class WatchEvents:
    events: list[WatchEvent]
    refused: list[RefusedObject] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """One chunk of a consistent listing of one kind.

    Chunks of one snapshot share `snapshot_id`, are numbered from 0 and the last one says
    so; only a snapshot received whole may delete objects it does not contain.
    """

    snapshot_id: str
    kind: KindKey
    chunk: int
    last: bool
    resource_version: int
    items: list[WatchEvent]
    refused: list[RefusedObject] = field(default_factory=list)
    replace: bool = False
    """The listing is authoritative: it replaces what the hub holds of the kind whatever the
    stored resourceVersions (see protocol.md, 3.5). Read from the chunk that opens it."""


@dataclass(frozen=True, slots=True)
class Digest:
    digests: dict[KindKey, KindDigest]


@dataclass(frozen=True, slots=True)
class ResyncRequest:
    kinds: tuple[KindKey, ...]
    """Empty means every kind the agent watches."""


@dataclass(frozen=True, slots=True)
class WorkloadApply:
    """Hub -> agent: run this version of a workload (all its manifests)."""

    workload: str
    version: int
    manifests: list[dict[str, Any]]
    update_strategy: str
    delete_option: str
    feedback_rules: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class WorkloadRemove:
    """Hub -> agent: the workload is no longer placed here."""

    workload: str
    version: int
    delete_option: str


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    """Agent -> hub: the acknowledgement of a version (applied or removed) and its status."""

    workload: str
    version: int
    removed: bool
    conditions: list[dict[str, Any]]
    feedback: dict[str, Any]
    error: str
    status_hash: str


@dataclass(frozen=True, slots=True)
class WorkloadResync:
    """Agent -> hub, on every connect: the versions it holds."""

    held: dict[str, int]


@dataclass(frozen=True, slots=True)
class WorkloadStatusResync:
    """Hub -> agent: the status hashes the hub holds; the agent re-sends differing ones."""

    hashes: dict[str, str]


AgentMessage = (
    Hello
    | Heartbeat
    | Offline
    | WatchEvents
    | SnapshotChunk
    | Digest
    | WorkloadStatus
    | WorkloadResync
)
HubMessage = ResyncRequest | WorkloadApply | WorkloadRemove | WorkloadStatusResync

_TYPES: dict[type, MessageType] = {
    Hello: MessageType.HELLO,
    Heartbeat: MessageType.HEARTBEAT,
    Offline: MessageType.OFFLINE,
    WatchEvents: MessageType.WATCH_EVENTS,
    SnapshotChunk: MessageType.SNAPSHOT,
    Digest: MessageType.DIGEST,
    WorkloadStatus: MessageType.WORKLOAD_STATUS,
    WorkloadResync: MessageType.WORKLOAD_RESYNC,
    ResyncRequest: MessageType.RESYNC_REQUEST,
    WorkloadApply: MessageType.WORKLOAD_APPLY,
    WorkloadRemove: MessageType.WORKLOAD_REMOVE,
    WorkloadStatusResync: MessageType.WORKLOAD_STATUS_RESYNC,
}


def message_type(message: AgentMessage | HubMessage) -> MessageType:
    return _TYPES[type(message)]


# -- encoding -------------------------------------------------------------------------


def _kind_json(kind: KindKey) -> dict[str, str]:
    return {"apiVersion": kind.api_version, "kind": kind.kind}


def hello_data(hello: Hello) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL_VERSION,
        "labels": hello.labels,
        "kinds": [_kind_json(k) for k in hello.kinds],
        "heartbeatSeconds": hello.heartbeat_s,
        "agentVersion": hello.agent_version,
        "instance": hello.instance,
    }


def watch_events_data(events: list[tuple[EventType, KubeObject]]) -> dict[str, Any]:
    return {"events": [{"type": str(t), "object": o} for t, o in events]}


def snapshot_data(
    snapshot_id: str,
    kind: KindKey,
    chunk: int,
    last: bool,
    resource_version: int,
    items: list[KubeObject],
) -> dict[str, Any]:
    return {
        "snapshotId": snapshot_id,
        **_kind_json(kind),
        "chunk": chunk,
        "last": last,
        "resourceVersion": str(resource_version),
        "items": items,
    }


def digest_data(digests: dict[KindKey, KindDigest]) -> dict[str, Any]:
    return {
        "digests": [{**_kind_json(k), "count": d.count, "hash": d.hash} for k, d in digests.items()]
    }


def workload_apply_data(m: WorkloadApply) -> dict[str, Any]:
    return {
        "workload": m.workload,
        "version": m.version,
        "manifests": m.manifests,
        "updateStrategy": m.update_strategy,
        "deleteOption": m.delete_option,
        "feedbackRules": m.feedback_rules,
    }


def workload_remove_data(m: WorkloadRemove) -> dict[str, Any]:
    return {"workload": m.workload, "version": m.version, "deleteOption": m.delete_option}


def workload_status_data(m: WorkloadStatus) -> dict[str, Any]:
    return {
        "workload": m.workload,
        "version": m.version,
        "removed": m.removed,
        "conditions": m.conditions,
        "feedback": m.feedback,
        "error": m.error,
        "statusHash": m.status_hash,
    }


def workload_status_resync_data(hashes: dict[str, str]) -> dict[str, Any]:
    return {"statusHashes": [{"workload": w, "statusHash": h} for w, h in sorted(hashes.items())]}


def workload_resync_data(held: dict[str, int]) -> dict[str, Any]:
    return {"workloads": [{"workload": w, "version": v} for w, v in sorted(held.items())]}


def resync_request_data(kinds: tuple[KindKey, ...]) -> dict[str, Any]:
    return {"kinds": [_kind_json(k) for k in kinds]}


# -- decoding -------------------------------------------------------------------------


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise MalformedMessage(f"field {name!r} missing or of the wrong type")
    return value


def _text(value: object, what: str) -> str:
    """A protocol string (not object data): stored in text columns, so no U+0000."""
    if not isinstance(value, str):
        raise MalformedMessage(f"{what} must be a string")
    if "\x00" in value:
        raise MalformedMessage(f"{what} contains U+0000")
    return value


def _kind(doc: object) -> KindKey:
    if not isinstance(doc, dict):
        raise MalformedMessage("a kind must be an object with apiVersion and kind")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version or not kind:
        raise MalformedMessage("a kind must have string apiVersion and kind")
    return KindKey(_text(api_version, "apiVersion"), _text(kind, "kind"))


def _labels(doc: object) -> dict[str, str]:
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in doc.items()
    ):
        raise MalformedMessage("labels must map strings to strings")
    for key, value in doc.items():
        _text(key, "a label key")
        _text(value, "a label value")
    return doc


def _heartbeat(data: dict[str, Any]) -> float:
    value = float(_field(data, "heartbeatSeconds", (int, float)))
    low, high = HEARTBEAT_RANGE_S
    if not low <= value <= high:
        raise MalformedMessage(
            f"heartbeatSeconds must be between {low:g} and {high:g}, got {value!r}"
        )
    return value


def _events(raw: list[Any]) -> tuple[list[WatchEvent], list[RefusedObject]]:
    events: list[WatchEvent] = []
    refused: list[RefusedObject] = []
    for item in raw:
        if not isinstance(item, dict):
            refused.append(RefusedObject("bad_object", "an event must be an object", item))
            continue
        type_, obj = item.get("type"), item.get("object")
        if type_ not in EVENT_TYPES:
            refused.append(RefusedObject("bad_event_type", f"bad event type {type_!r}", item))
            continue
        try:
            events.append(WatchEvent.of(type_, obj, encode=True))  # type: ignore[arg-type]
        except InvalidObject as exc:
            refused.append(RefusedObject("bad_object", str(exc), obj))
    return events, refused


def _items(raw: list[Any], kind: KindKey) -> tuple[list[WatchEvent], list[RefusedObject]]:
    items: list[WatchEvent] = []
    refused: list[RefusedObject] = []
    for obj in raw:
        try:
            item = WatchEvent.of(EventType.ADDED, obj, encode=True)
        except InvalidObject as exc:
            refused.append(RefusedObject("bad_object", str(exc), obj))
            continue
        if item.ref.kind != kind.kind or item.ref.api_version != kind.api_version:
            detail = f"snapshot of {kind} holds a {item.ref.api_version}/{item.ref.kind}"
            refused.append(RefusedObject("wrong_kind", detail, obj))
            continue
        items.append(item)
    return items, refused


def _rv(value: object) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        rv = int(value)
        if rv < 2**63:
            return rv
    raise MalformedMessage("resourceVersion must be an integer string below 2^63")


def parse_agent_message(event: CloudEvent) -> AgentMessage:
    data = event.data
    match event.type:
        case MessageType.WATCH_EVENTS:
            return WatchEvents(*_events(_field(data, "events", list)))
        case MessageType.SNAPSHOT:
            kind = _kind(data)
            chunk = _field(data, "chunk", int)
            if chunk < 0:
                raise MalformedMessage("chunk must be >= 0")
            snapshot_id = _field(data, "snapshotId", str)
            last = _field(data, "last", bool)
            resource_version = _rv(data.get("resourceVersion"))
            items, refused = _items(_field(data, "items", list), kind)
            replace = data.get("replace", False)
            if not isinstance(replace, bool):
                raise MalformedMessage("field 'replace' must be a boolean")
            return SnapshotChunk(
                snapshot_id=snapshot_id,
                kind=kind,
                chunk=chunk,
                last=last,
                resource_version=resource_version,
                items=items,
                refused=refused,
                replace=replace,
            )
        case MessageType.HEARTBEAT:
            return Heartbeat()
        case MessageType.HELLO:
            protocol = data.get("protocol", PROTOCOL_VERSION)
            if protocol != PROTOCOL_VERSION:
                raise MalformedMessage(
                    f"protocol version {protocol!r} is not supported (this hub speaks "
                    f"{PROTOCOL_VERSION})",
                    "protocol",
                )
            return Hello(
                labels=_labels(data.get("labels", {})),
                kinds=tuple(_kind(k) for k in _field(data, "kinds", list)),
                heartbeat_s=_heartbeat(data),
                agent_version=_text(data.get("agentVersion", ""), "agentVersion")[:100],
                instance=_text(data.get("instance", ""), "instance")[:100],
            )
        case MessageType.OFFLINE:
            return Offline(str(data.get("reason", "")))
        case MessageType.DIGEST:
            digests: dict[KindKey, KindDigest] = {}
            for item in _field(data, "digests", list):
                kind = _kind(item)
                count, hash_ = item.get("count"), item.get("hash")
                if not isinstance(count, int) or not isinstance(hash_, str):
                    raise MalformedMessage("a digest needs an integer count and a string hash")
                digests[kind] = KindDigest(count, hash_)
            return Digest(digests)
        case MessageType.WORKLOAD_STATUS:
            return WorkloadStatus(
                workload=_workload_name(data),
                version=_version(data),
                removed=bool(data.get("removed", False)),
                conditions=[c for c in _field(data, "conditions", list) if isinstance(c, dict)][
                    :20
                ],
                feedback=_object(data.get("feedback")),
                error=_human(data.get("error")),
                status_hash=_human(data.get("statusHash"))[:64],
            )
        case MessageType.WORKLOAD_RESYNC:
            held: dict[str, int] = {}
            for item in _field(data, "workloads", list):
                if not isinstance(item, dict):
                    raise MalformedMessage("a held workload must be an object")
                held[_workload_name(item)] = _version(item)
            return WorkloadResync(held)
    raise MalformedMessage(f"unknown message type {event.type!r}", "unknown_type")


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _human(value: object, limit: int = 4096) -> str:
    """A message for people (an error): kept, bounded, U+0000 shown as U+FFFD."""
    return str(value or "")[:limit].replace("\x00", "\ufffd")


def _workload_name(data: dict[str, Any]) -> str:
    name = _field(data, "workload", str)
    try:
        return check_name(name, "workload")
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from None


def _version(data: dict[str, Any]) -> int:
    version = _field(data, "version", int)
    if version < 0:
        raise MalformedMessage("version must be >= 0")
    return int(version)


def parse_hub_message(event: CloudEvent) -> HubMessage:
    data = event.data
    match event.type:
        case MessageType.RESYNC_REQUEST:
            return ResyncRequest(tuple(_kind(k) for k in _field(data, "kinds", list)))
        case MessageType.WORKLOAD_APPLY:
            manifests = _field(data, "manifests", list)
            if not all(isinstance(m, dict) for m in manifests):
                raise MalformedMessage("every manifest must be an object")
            return WorkloadApply(
                workload=_field(data, "workload", str),
                version=_version(data),
                manifests=manifests,
                update_strategy=str(data.get("updateStrategy") or "ServerSideApply"),
                delete_option=str(data.get("deleteOption") or "Foreground"),
                feedback_rules=[r for r in _list(data.get("feedbackRules")) if isinstance(r, dict)],
            )
        case MessageType.WORKLOAD_STATUS_RESYNC:
            hashes: dict[str, str] = {}
            for item in _field(data, "statusHashes", list):
                if not isinstance(item, dict):
                    raise MalformedMessage("a status hash must be an object")
                hashes[_field(item, "workload", str)] = str(item.get("statusHash") or "")
            return WorkloadStatusResync(hashes)
        case MessageType.WORKLOAD_REMOVE:
            return WorkloadRemove(
                workload=_field(data, "workload", str),
                version=_version(data),
                delete_option=str(data.get("deleteOption") or "Foreground"),
            )
    raise MalformedMessage(f"unknown message type {event.type!r}", "unknown_type")
