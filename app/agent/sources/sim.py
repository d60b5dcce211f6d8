"""A `ClusterSource` that simulates a Kubernetes cluster in memory, for demos, tests and benchmarks.

Contract:
- one cluster-wide resourceVersion counter, as etcd keeps: every create, update and delete
  bumps it, so resourceVersions strictly increase across all events of all kinds; a DELETED
  event carries the object stamped with the delete's new resourceVersion;
- `list` is consistent: its items and its resource_version are read with no await between;
- events are reported synchronously at the moment of each change, to the sink of the `run`
  currently awaited; changes made while no `run` is active are reported nowhere;
- every object handed out (listings, events, `get`, `apply`) is a private copy;
- with a `seed`, a cluster builds and changes (through `mutate`) the same objects every time,
  uids and timestamps included (timestamps then come from a synthetic clock).
Random churn keeps each kind's count near its share of `objects`. Objects created through
`apply` belong to the caller: churn never modifies or deletes them.

`truth_endpoint` serves the cluster's current state (every object's uid and resourceVersion)
on 127.0.0.1, so fault tests can compare a hub with an agent running as another process. It is
a debugging aid, off unless the agent is started with `--debug-truth-port`.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from itertools import accumulate

import orjson

from app.agent.sources import sim_shapes
from app.agent.sources.base import Listing, SourceSink
from app.informer.objects import (
    EventType,
    InvalidObject,
    KindKey,
    KubeObject,
    WatchEvent,
    object_ref,
)

TICK_S = 0.02
"""How often `run` wakes to make the changes due since its last wake."""

MAX_CATCH_UP_S = 1.0
"""A late wake makes at most this many seconds' worth of changes, not an unbounded burst."""

MODIFY_SHARE = 0.8
"""Share of churn that modifies an object; the rest creates or deletes."""

SEEDED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

_Key = tuple[str, str]  # (namespace, name)


ObjectKeys = list[tuple[KindKey, str, str]]


def _copy(obj: KubeObject) -> KubeObject:
    """A deep copy; objects are plain JSON, and orjson copies them several times faster."""
    copied: KubeObject = orjson.loads(orjson.dumps(obj))
    return copied


class _KindState:
    """One kind's objects, plus the keys churn may touch, kept for O(1) random picks."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.objects: dict[_Key, KubeObject] = {}
        self._churnable: list[_Key] = []
        self._positions: dict[_Key, int] = {}

    @property
    def churnable(self) -> int:
        return len(self._churnable)

    def add_churnable(self, key: _Key) -> None:
        if key not in self._positions:
            self._positions[key] = len(self._churnable)
            self._churnable.append(key)

    def drop_churnable(self, key: _Key) -> None:
        """Put `key` out of churn's reach: its object is gone, or the caller owns it now."""
        position = self._positions.pop(key, None)
        if position is None:
            return
        last = self._churnable.pop()
        if last != key:
            self._churnable[position] = last
            self._positions[last] = position

    def pick(self, rng: random.Random) -> _Key:
        return self._churnable[rng.randrange(len(self._churnable))]


class SimulatedCluster:
    """A simulated cluster of about `objects` objects changing `churn_per_s` times a second.

    See the module doc for the guarantees. Kinds default to Node, ConfigMap, Service,
    Deployment and Pod; any other kind gets a generic shape. `churn_per_s=0` is a static
    cluster that changes only through `apply`, `delete` and `mutate`.
    """

    def __init__(
        self,
        *,
        cluster: str,
        objects: int = 300,
        churn_per_s: float = 5.0,
        seed: int | None = None,
        kinds: Sequence[KindKey] | None = None,
    ) -> None:
        chosen = tuple(dict.fromkeys(sim_shapes.DEFAULT_KINDS if kinds is None else kinds))
        if not chosen:
            raise ValueError("a SimulatedCluster needs at least one kind")
        if objects < 0 or churn_per_s < 0:
            raise ValueError("objects and churn_per_s must not be negative")
        self._cluster = cluster
        self._kinds = chosen
        self._churn_per_s = churn_per_s
        self._rng = random.Random(seed)
        self._epoch = SEEDED_EPOCH if seed is not None else None
        self._counter = 0
        self._sink: SourceSink | None = None
        targets = _shares(objects, [sim_shapes.kind_weight(kind) for kind in chosen])
        self._states = {kind: _KindState(t) for kind, t in zip(chosen, targets, strict=True)}
        self._cum_weights = list(accumulate(max(t, 1) for t in targets))
        for kind in sorted(chosen, key=lambda k: k != sim_shapes.NODE):  # Pods need Nodes
            for _ in range(self._states[kind].target):
                self._create(kind)

    @property
    def cluster(self) -> str:
        return self._cluster

    @property
    def kinds(self) -> tuple[KindKey, ...]:
        return self._kinds

    @property
    def resource_version(self) -> int:
        """The cluster-wide counter: the resourceVersion of the latest change."""
        return self._counter

    @property
    def reports_initial_listing(self) -> bool:
        return False  # the sim only changes; the agent lists it

    async def list(self, kind: KindKey) -> Listing:
        """Every object of `kind` as of the current resourceVersion; ValueError if not simulated."""
        state = self._state(kind)
        return Listing(kind, [_copy(obj) for obj in state.objects.values()], self._counter)

    async def run(self, sink: SourceSink) -> None:
        """Churn and report every change to `sink` until cancelled; never calls `sink.listed`.

        Wakes every TICK_S and makes the changes due since the last wake, so high rates need
        no sleep per change. Only one `run` at a time (RuntimeError otherwise). An exception
        raised by the sink ends `run`.
        """
        if self._sink is not None:
            raise RuntimeError("this SimulatedCluster is already running")
        self._sink = sink
        try:
            if self._churn_per_s == 0:
                await asyncio.Event().wait()
            loop = asyncio.get_running_loop()
            last = loop.time()
            owed = 0.0
            while True:
                await asyncio.sleep(TICK_S)
                now = loop.time()
                owed += min(now - last, MAX_CATCH_UP_S) * self._churn_per_s
                last = now
                due = int(owed)
                owed -= due
                self.mutate(due)
        finally:
            self._sink = None

    def mutate(self, n: int = 1) -> None:
        """Make `n` random churn changes now, reporting `n` events."""
        for _ in range(n):
            self._churn_once()

    def apply(self, obj: KubeObject) -> KubeObject:
        """Create or update `obj` (by kind, namespace and name); return the stored copy.

        `obj` is a manifest: its uid and resourceVersion, if any, are ignored. A create gets a
        new uid, creationTimestamp and generation 1; an update keeps the uid and
        creationTimestamp and bumps the generation when the spec changed. Either gets a new
        resourceVersion and is reported (ADDED or MODIFIED). InvalidObject if `obj` lacks
        apiVersion, kind or metadata.name; ValueError if its kind is not simulated.
        """
        stored = _copy(obj)
        meta = stored.get("metadata")
        if not isinstance(meta, dict):
            raise InvalidObject("object lacks metadata")
        meta["uid"], meta["resourceVersion"] = "pending", "0"  # both assigned below
        ref = object_ref(stored)
        state = self._state(KindKey(ref.api_version, ref.kind))
        key = (ref.namespace, ref.name)
        previous = state.objects.get(key)
        if previous is None:
            meta["uid"] = self._new_uid()
            meta["creationTimestamp"] = self._timestamp()
            meta["generation"] = 1
        else:
            old_meta = previous["metadata"]
            meta["uid"] = old_meta["uid"]
            meta["creationTimestamp"] = old_meta["creationTimestamp"]
            changed = stored.get("spec") != previous.get("spec")
            meta["generation"] = old_meta.get("generation", 1) + (1 if changed else 0)
        state.drop_churnable(key)
        state.objects[key] = stored
        self._report(EventType.ADDED if previous is None else EventType.MODIFIED, stored)
        return _copy(stored)

    def delete(self, kind: KindKey, namespace: str, name: str) -> bool:
        """Delete an object and report it; False (and no event) if there is none."""
        state = self._states.get(kind)
        obj = None if state is None else state.objects.pop((namespace, name), None)
        if state is None or obj is None:
            return False
        state.drop_churnable((namespace, name))
        self._report(EventType.DELETED, obj)
        return True

    def get(self, kind: KindKey, namespace: str, name: str) -> KubeObject | None:
        """A copy of one object (namespace "" for cluster-scoped kinds), or None."""
        state = self._states.get(kind)
        obj = None if state is None else state.objects.get((namespace, name))
        return None if obj is None else _copy(obj)

    def count(self, kind: KindKey | None = None) -> int:
        """How many objects of `kind` exist, or of every kind when `kind` is None."""
        if kind is not None:
            state = self._states.get(kind)
            return 0 if state is None else len(state.objects)
        return sum(len(state.objects) for state in self._states.values())

    def truth(self) -> dict[str, object]:
        """Every object's uid and resourceVersion now, as the truth endpoint serves them:
        `{"resourceVersion": "<counter>", "objects": [{"kind": "apps/v1/Deployment",
        "namespace", "name", "uid", "resourceVersion"}, ...]}`, sorted."""
        objects = sorted(
            (str(kind), namespace, name, obj["metadata"]["uid"], obj["metadata"]["resourceVersion"])
            for kind, state in self._states.items()
            for (namespace, name), obj in state.objects.items()
        )
        fields = ("kind", "namespace", "name", "uid", "resourceVersion")
        return {
            "resourceVersion": str(self._counter),
            "objects": [dict(zip(fields, row, strict=True)) for row in objects],
        }

    def _state(self, kind: KindKey) -> _KindState:
        state = self._states.get(kind)
        if state is None:
            # a kind nobody watches (a workload may bring any kind): held, never churned
            state = self._states[kind] = _KindState(0)
        return state

    # -- WorkloadTarget: what workload delivery applies to ----------------------------

    async def apply_object(self, obj: KubeObject) -> KubeObject:
        return self.apply(obj)

    async def delete_object(self, kind: KindKey, namespace: str, name: str) -> bool:
        return self.delete(kind, namespace, name)

    async def get_object(self, kind: KindKey, namespace: str, name: str) -> KubeObject | None:
        return self.get(kind, namespace, name)

    async def labelled(self, key: str, value: str) -> ObjectKeys:
        return [
            (kind, namespace, name)
            for kind, state in self._states.items()
            for (namespace, name), obj in state.objects.items()
            if (obj.get("metadata", {}).get("labels") or {}).get(key) == value
        ]

    def _churn_once(self) -> None:
        kind = self._rng.choices(self._kinds, cum_weights=self._cum_weights)[0]
        state = self._states[kind]
        if state.churnable and self._rng.random() < MODIFY_SHARE:
            key = state.pick(self._rng)
            obj = state.objects[key]
            sim_shapes.change(obj, self._rng, self._timestamp())
            self._report(EventType.MODIFIED, obj)
            return
        # Lean towards the target: certain to create at -10% of it, to delete at +10%.
        slack = max(1.0, state.target * 0.1)
        create_odds = 0.5 + (state.target - state.churnable) / (2 * slack)
        if not state.churnable or self._rng.random() < create_odds:
            self._create(kind)
        else:
            key = state.pick(self._rng)
            self.delete(kind, *key)

    def _create(self, kind: KindKey) -> None:
        state = self._states[kind]
        app = self._rng.choice(sim_shapes.APPS)
        namespace = "" if sim_shapes.is_cluster_scoped(kind) else self._namespace(app)
        name = sim_shapes.new_name(kind, self._rng, app)
        while (namespace, name) in state.objects:
            name = sim_shapes.new_name(kind, self._rng, app)
        now = self._timestamp()
        node = self._node()
        obj = sim_shapes.build(
            kind, self._rng, name=name, namespace=namespace, app=app, now=now, node=node
        )
        meta = obj["metadata"]
        meta["uid"] = self._new_uid()
        meta["creationTimestamp"] = now
        state.objects[(namespace, name)] = obj
        state.add_churnable((namespace, name))
        self._report(EventType.ADDED, obj)

    def _report(self, type_: EventType, obj: KubeObject) -> None:
        """Stamp `obj` with the next resourceVersion and report a copy to the active sink."""
        self._counter += 1
        obj["metadata"]["resourceVersion"] = str(self._counter)
        if self._sink is not None:
            self._sink.event(WatchEvent.of(type_, _copy(obj)))

    def _namespace(self, app: str) -> str:
        if app in ("db", "cache"):
            return self._rng.choice(("data", "default"))
        return self._rng.choice(sim_shapes.NAMESPACES)

    def _node(self) -> str:
        """A Node for a new Pod to run on: a simulated one if there are any."""
        state = self._states.get(sim_shapes.NODE)
        if state is not None and state.churnable:
            return state.pick(self._rng)[1]
        return self._rng.choice(("node-a", "node-b", "node-c"))

    def _new_uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _timestamp(self) -> str:
        """Wall-clock time, or with a seed a synthetic clock ticking a second per change."""
        if self._epoch is None:
            now = datetime.now(UTC)
        else:
            now = self._epoch + timedelta(seconds=self._counter)
        return now.strftime("%Y-%m-%dT%H:%M:%SZ")


TRUTH_REQUEST_TIMEOUT_S = 5.0


@asynccontextmanager
async def truth_endpoint(cluster: SimulatedCluster, port: int = 0) -> AsyncIterator[int]:
    """Serve `GET /truth` (`SimulatedCluster.truth` as JSON) on 127.0.0.1:`port` (0: a free
    port) until the block ends; yields the port. One request per connection, answered from
    the state at that moment (no await between reading the state and encoding it); any other
    request gets 404. Loopback only: it is a debugging aid, not an API."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(TRUTH_REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            method, _, rest = head.partition(b" ")
            path = rest.partition(b" ")[0]
            if method == b"GET" and path.split(b"?")[0] == b"/truth":
                status, body = b"200 OK", orjson.dumps(cluster.truth())
            else:
                status, body = b"404 Not Found", b'{"error": "only GET /truth is served"}'
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
            )
            writer.write(body)
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent no request: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        yield int(server.sockets[0].getsockname()[1])


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` by `weights` (largest remainders), at least one each if there are enough."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    if total >= len(weights):
        for i, share in enumerate(shares):
            if share == 0:
                shares[i] = 1
                shares[shares.index(max(shares))] -= 1
    return shares
