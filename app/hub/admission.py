"""What a cluster may send: a message is checked whole, then object by object.

`Admission.check` decodes the envelope and the payload (`app.transport`), then applies the
rules that need the hub's memory of the cluster (protocol.md 3.4):

- a registered cluster's labels are the admin's, not what its hello says
  (`registrations.py`): a compromised agent cannot relabel itself into other workloads;
- inventory (watch events, snapshots, digests) must follow a hello: before one it is
  refused (`no_hello`) and the cluster is asked for hello and a relist;
- inventory must be of a kind the last hello announced: an event of another kind is refused
  (`unannounced_kind`), a snapshot of one refused whole, digest entries for one ignored;
- objects the parser refused (`bad_object`, `bad_event_type`, `wrong_kind`) are refused one
  by one, and the message's others go on; after a refused watch event the kind is relisted,
  so a version stored before it is replaced.

Kinds a cluster announced are remembered at arrival (not after the commit), in the order
messages arrive, and loaded from the clusters table when the hub starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from app.hub.refusals import Refusals, kind_of
from app.hub.registrations import RegistrationGate
from app.hub.relists import EVERYTHING
from app.informer.objects import KindKey
from app.transport import cloudevents
from app.transport.messages import (
    AgentMessage,
    Digest,
    Hello,
    RefusedObject,
    SnapshotChunk,
    WatchEvents,
    parse_agent_message,
)


class Admission:
    def __init__(self, refusals: Refusals, registrations: RegistrationGate) -> None:
        self._refusals = refusals
        self._registrations = registrations
        self._announced: dict[str, frozenset[KindKey]] = {}
        self.relist_wanted: dict[str, set[KindKey | None]] = {}
        """Per cluster, kinds to relist after refusals (EVERYTHING: hello and all kinds)."""

    def announce(self, cluster: str, kinds: Iterable[KindKey]) -> None:
        self._announced[cluster] = frozenset(kinds)

    def forget(self, cluster: str) -> None:
        """The cluster was removed: what it announced and what it should relist go."""
        self._announced.pop(cluster, None)
        self.relist_wanted.pop(cluster, None)

    def check(self, cluster: str, topic: str, payload: bytes) -> AgentMessage | None:
        """The message to apply (perhaps less refused objects), or None if refused."""
        reject = self._refusals.reject
        try:
            envelope = cloudevents.decode(payload)
        except cloudevents.MalformedMessage as exc:
            reject(exc.reason, topic, str(exc), cluster=cluster, payload=payload)
            return None
        if envelope.cluster != cluster:
            detail = f"message names cluster {envelope.cluster!r}, topic {cluster!r}"
            reject("cluster_mismatch", topic, detail, cluster=cluster, payload=payload)
            return None
        try:
            message = parse_agent_message(envelope)
        except cloudevents.MalformedMessage as exc:
            reject(
                exc.reason, topic, str(exc), cluster=cluster, type_=envelope.type, payload=payload
            )
            return None
        return self._kinds(cluster, topic, envelope.type, payload, message)

    def _kinds(
        self, cluster: str, topic: str, type_: str, payload: bytes, message: AgentMessage
    ) -> AgentMessage | None:
        if isinstance(message, Hello):
            self._announced[cluster] = frozenset(message.kinds)
            self._registrations.said_hello(cluster, message.labels)
            labels = self._registrations.labels(cluster, message.labels)
            return message if labels == message.labels else replace(message, labels=labels)
        if not isinstance(message, WatchEvents | SnapshotChunk | Digest):
            return message
        reject = self._refusals.reject
        kinds = self._announced.get(cluster)
        if kinds is None:
            detail = "inventory before any hello; asked the agent for hello and a relist"
            reject("no_hello", topic, detail, cluster=cluster, type_=type_, payload=payload)
            self.relist_wanted.setdefault(cluster, set()).add(EVERYTHING)
            return None
        match message:
            case SnapshotChunk() if message.kind not in kinds:
                detail = f"a snapshot of {message.kind}, which the cluster's hello did not announce"
                reject(
                    "unannounced_kind", topic, detail, cluster=cluster, type_=type_, payload=payload
                )
                return None
            case SnapshotChunk():
                self._refusals.objects(cluster, topic, type_, message.refused)
            case WatchEvents():
                return self._events(cluster, topic, type_, message, kinds)
            case Digest() if message.digests.keys() - kinds:
                return Digest({k: d for k, d in message.digests.items() if k in kinds})
        return message

    def _events(
        self,
        cluster: str,
        topic: str,
        type_: str,
        message: WatchEvents,
        kinds: frozenset[KindKey],
    ) -> WatchEvents:
        kept = [e for e in message.events if e.ref.kind_key in kinds]
        refused = [*message.refused]
        refused += [
            RefusedObject("unannounced_kind", f"{e.ref.kind_key} was not announced", e.object)
            for e in message.events
            if e.ref.kind_key not in kinds
        ]
        self._refusals.objects(cluster, topic, type_, refused)
        for r in message.refused:  # a relist replaces a stale version the hub holds
            kind = kind_of(r.item)
            if kind is not None and kind in kinds:
                self.relist_wanted.setdefault(cluster, set()).add(kind)
        return message if len(kept) == len(message.events) else WatchEvents(kept)
