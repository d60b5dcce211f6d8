"""The fleet overview's model: every cluster once in memory, and the views browsers show.

`FleetModel` holds the clusters as last read from the database (`replace`, every few
seconds, once for all browsers) and what changes between reads (`set_live`: change rates,
clusters over quota, clusters the hub waits for a listing from). `page(view)` answers one
browser's view: its filter (scope, name search, label selector, state), sort, page and the
health summary of what the filter covers.

Costs at 10,000 clusters, so that many open overviews stay cheap:
- which clusters a filter admits (scope, search, selector) depends only on names and
  labels: it is computed once per filter and kept while no cluster joins, leaves or is
  relabelled (`membership`), not per read;
- sorted orders and the summary's counts are computed once per filter and read (and per
  tick for the change-rate sort only), however many browsers show them;
- a page is then a slice: its cost is its size, not the fleet's.
Caches are LRU-bounded, so many distinct searches cost CPU once each, never memory.

States, worst first (the default sort, "problems first"):
    offline     the hub has not heard from it for its heartbeats (or it said goodbye)
    over quota  the hub drops its messages now (`HubService.over_quota`)
    refusing    the hub refused some of its messages or objects recently (`rejections`)
    not synced  online, and this hub waits for a listing from it: a snapshot is arriving,
                or a relist it asked for (digest mismatch, missing chunk, refused object,
                after over quota) has not come yet
    online      none of the above
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.access.roles import EVERYTHING, ClusterScope
from app.informer.selectors import LabelSelector
from app.store.fleet import ClusterState
from app.web.lru import Lru

Sort = Literal["state", "name", "seen", "objects", "rate"]
SORTS: tuple[Sort, ...] = ("state", "name", "seen", "objects", "rate")
DESCENDING_FIRST: frozenset[Sort] = frozenset({"objects", "rate"})
"""Sorts whose natural direction is largest first; the others start ascending (for last
seen: the longest silent first)."""
Show = Literal["all", "problems", "offline", "overquota", "refusing", "unsynced", "online"]
SHOWS: tuple[Show, ...] = (
    "all",
    "problems",
    "offline",
    "overquota",
    "refusing",
    "unsynced",
    "online",
)
MIN_PAGE_SIZE, MAX_PAGE_SIZE, PAGE_SIZE = 10, 200, 50
MAX_PAGE = 10_000
MAX_SEARCH_CHARS = 63
"""A cluster name is at most 63 characters: a longer search matches nothing."""
GROUP_VALUES = 12
"""Label values listed per grouping key; the rest are counted together."""

OFFLINE, OVER_QUOTA, REFUSING, UNSYNCED, HEALTHY = range(5)
STATE_KEYS = ("offline", "overquota", "refusing", "unsynced", "online")
STATE_NAMES = ("offline", "over quota", "refusing", "not synced", "online")
SHOW_RANKS = {key: rank for rank, key in enumerate(STATE_KEYS)}


@dataclass(frozen=True, slots=True)
class FleetView:
    """What one overview shows. Hashable: browsers showing the same view share its work."""

    scope: ClusterScope = EVERYTHING
    q: str = ""
    """Name substring, lower case."""
    labels: LabelSelector = field(default_factory=LabelSelector)
    show: Show = "all"
    sort: Sort = "state"
    desc: bool = False
    page: int = 1
    size: int = PAGE_SIZE

    @property
    def filter_key(self) -> tuple[str, str, LabelSelector]:
        return (self.scope.text, self.q, self.labels)


@dataclass(frozen=True, slots=True)
class Live:
    """What changes between reads of the database."""

    rates: Mapping[str, float] = field(default_factory=dict)
    """Changes per second over the last period, of the clusters that changed."""
    over_quota: frozenset[str] = frozenset()
    unsynced: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    labels: dict[str, str]
    online: bool
    last_seen: float
    objects: int
    rate: float
    over_quota: bool
    refused: int
    unsynced: bool
    rank: int

    @property
    def state(self) -> str:
        return STATE_NAMES[self.rank]

    @property
    def state_key(self) -> str:
        return STATE_KEYS[self.rank]

    def json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state_key,
            "stateLabel": self.state,
            "online": self.online,
            "lastSeen": self.last_seen,
            "objects": self.objects,
            "rate": self.rate,
            "overQuota": self.over_quota,
            "refused": self.refused,
            "unsynced": self.unsynced,
        }


@dataclass(frozen=True, slots=True)
class Group:
    """Clusters with one value of a grouping label (`value` None: without the label)."""

    value: str | None
    clusters: int
    offline: int


@dataclass(frozen=True, slots=True)
class Summary:
    clusters: int = 0
    online: int = 0
    offline: int = 0
    over_quota: int = 0
    refusing: int = 0
    unsynced: int = 0
    objects: int = 0
    rate: float = 0.0
    groups: dict[str, list[Group]] = field(default_factory=dict)
    """Per grouping label key: its most common values, then `others` (value "")."""

    @property
    def problems(self) -> int:
        return self.offline + self.over_quota + self.refusing + self.unsynced

    def json(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters,
            "online": self.online,
            "offline": self.offline,
            "overQuota": self.over_quota,
            "refusing": self.refusing,
            "unsynced": self.unsynced,
            "objects": self.objects,
            "rate": round(self.rate, 1),
            "groups": {
                key: [[g.value, g.clusters, g.offline] for g in groups]
                for key, groups in self.groups.items()
            },
        }


@dataclass(frozen=True, slots=True)
class FleetPage:
    view: FleetView
    rows: list[Row]
    total: int
    """Clusters the filter and `show` admit (over every page)."""
    page: int
    """The page shown: the view's, or the last one if the view asked past it."""
    pages: int
    summary: Summary

    @property
    def first(self) -> int:
        """1-based position of the first row shown (0 when there is none)."""
        return (self.page - 1) * self.view.size + 1 if self.rows else 0

    def json(self, now: float) -> dict[str, Any]:
        return {
            "summary": self.summary.json(),
            "total": self.total,
            "page": self.page,
            "pages": self.pages,
            "rows": [r.json() for r in self.rows],
            "now": now,
        }


@dataclass(slots=True)
class _Members:
    """The clusters one filter admits, as indices into the model's name-ordered list."""

    indices: list[int]
    admitted: bytearray
    """admitted[i] == 1 when cluster i is a member: O(1) tests for the live sets."""


@dataclass(slots=True)
class _Static:
    """What a filter's members say until the next read."""

    summary: Summary
    offline: list[int]
    refusing: list[int]
    online: list[int]


class FleetModel:
    def __init__(self, group_labels: Sequence[str] = ("env", "region"), cache: int = 64) -> None:
        self.group_labels = tuple(group_labels)
        self.generation = 0
        """Bumped by every `replace`."""
        self._states: list[ClusterState] = []
        self._index: dict[str, int] = {}
        self._shape: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
        self._live = Live()
        self._live_version = 0
        """Bumped when the over-quota or not-synced sets change (rates alone do not)."""
        self._tick = 0
        self._members: Lru[tuple[str, str, LabelSelector], _Members] = Lru(cache)
        self._static: Lru[tuple[str, str, LabelSelector], _Static] = Lru(cache)
        self._orders: Lru[tuple[Any, ...], tuple[tuple[int, int, int], list[int]]] = Lru(cache * 2)

    @property
    def clusters(self) -> int:
        return len(self._states)

    @property
    def live(self) -> Live:
        return self._live

    def replace(self, states: list[ClusterState]) -> None:
        """A new read of every cluster, ordered by name."""
        shape = tuple((s.name, tuple(sorted(s.labels.items()))) for s in states)
        if shape != self._shape:
            self._shape = shape
            self._members.clear()
        self._states = states
        self._index = {s.name: i for i, s in enumerate(states)}
        self._static.clear()
        self._orders.clear()
        self.generation += 1

    def set_live(self, live: Live) -> None:
        """This tick's rates and sets; orders that depend on the sets are redone only when
        the sets change."""
        if live.over_quota != self._live.over_quota or live.unsynced != self._live.unsynced:
            self._live_version += 1
        self._live = live
        self._tick += 1

    # -- a view -------------------------------------------------------------------------

    def page(self, view: FleetView) -> FleetPage:
        members = self._membership(view)
        order = self._order(view, members)
        pages = max(1, math.ceil(len(order) / view.size))
        page = min(max(1, view.page), pages)
        start = (page - 1) * view.size
        rows = [self._row(i) for i in order[start : start + view.size]]
        return FleetPage(view, rows, len(order), page, pages, self._summary(view, members))

    def _membership(self, view: FleetView) -> _Members:
        key = view.filter_key
        found = self._members.get(key)
        if found is None:
            scope, q, labels = view.scope, view.q, view.labels
            indices = [
                i
                for i, s in enumerate(self._states)
                if (scope.everything or scope.admits(s.labels))
                and (not q or q in s.name.lower())
                and (not labels or labels.matches(s.labels))
            ]
            admitted = bytearray(len(self._states))
            for i in indices:
                admitted[i] = 1
            found = self._members.put(key, _Members(indices, admitted))
        return found

    def _static_of(self, view: FleetView, members: _Members) -> _Static:
        key = view.filter_key
        found = self._static.get(key)
        if found is None:
            found = self._static.put(key, self._count(members))
        return found

    def _count(self, members: _Members) -> _Static:
        states = self._states
        online = [i for i in members.indices if states[i].online]
        offline = [i for i in members.indices if not states[i].online]
        refusing = [i for i in members.indices if states[i].refused and states[i].online]
        groups: dict[str, list[Group]] = {}
        for key in self.group_labels:
            total: Counter[str | None] = Counter()
            down: Counter[str | None] = Counter()
            for i in members.indices:
                value = states[i].labels.get(key)
                total[value] += 1
                if not states[i].online:
                    down[value] += 1
            top = total.most_common(GROUP_VALUES)
            listed = [Group(v, n, down[v]) for v, n in top]
            rest = set(total) - {v for v, _ in top}
            if rest:
                listed.append(Group("", sum(total[v] for v in rest), sum(down[v] for v in rest)))
            groups[key] = listed
        summary = Summary(
            clusters=len(members.indices),
            online=len(online),
            offline=len(offline),
            refusing=len(refusing),
            objects=sum(states[i].objects for i in members.indices),
            groups=groups,
        )
        return _Static(summary, offline, refusing, online)

    def _summary(self, view: FleetView, members: _Members) -> Summary:
        """Counts by state partition the clusters (each is counted at its worst state)."""
        static = self._static_of(view, members)
        live = self._live
        admitted = members.admitted
        rate = 0.0
        for name, r in live.rates.items():
            i = self._index.get(name)
            if i is not None and admitted[i]:
                rate += r
        s = static.summary
        return Summary(
            clusters=s.clusters,
            online=s.online,
            offline=s.offline,
            over_quota=len(self._ranked(OVER_QUOTA, members, static)),
            refusing=len(self._ranked(REFUSING, members, static)),
            unsynced=len(self._ranked(UNSYNCED, members, static)),
            objects=s.objects,
            rate=rate,
            groups=s.groups,
        )

    def _ranked(self, rank: int, members: _Members, static: _Static) -> list[int]:
        """The members at `rank`, in name order, from the few candidates that may be."""
        if rank == OFFLINE:
            return static.offline
        if rank == HEALTHY:
            return [i for i in static.online if self.rank(i) == HEALTHY]
        if rank == REFUSING:
            candidates = static.refusing
        else:
            names = self._live.over_quota if rank == OVER_QUOTA else self._live.unsynced
            candidates = self._live_indices(names)
        return [i for i in candidates if members.admitted[i] and self.rank(i) == rank]

    def _live_indices(self, names: frozenset[str]) -> list[int]:
        return sorted(i for n in names if (i := self._index.get(n)) is not None)

    def rank(self, i: int) -> int:
        s = self._states[i]
        if not s.online:
            return OFFLINE
        if s.name in self._live.over_quota:
            return OVER_QUOTA
        if s.refused:
            return REFUSING
        if s.name in self._live.unsynced:
            return UNSYNCED
        return HEALTHY

    def _row(self, i: int) -> Row:
        s = self._states[i]
        return Row(
            s.name,
            s.labels,
            s.online,
            s.last_seen,
            s.objects,
            self._live.rates.get(s.name, 0.0),
            s.name in self._live.over_quota,
            s.refused,
            s.online and s.name in self._live.unsynced,
            self.rank(i),
        )

    # -- orders -------------------------------------------------------------------------

    def _order(self, view: FleetView, members: _Members) -> list[int]:
        """The view's clusters in its order, every page of it; kept until it may change."""
        key = (view.filter_key, view.show, view.sort, view.desc)
        valid = (
            self.generation,
            self._live_version,
            self._tick if view.sort == "rate" else 0,
        )
        cached = self._orders.get(key)
        if cached is not None and cached[0] == valid:
            return cached[1]
        chosen = self._shown(view, members)
        sort_key = self._sort_key(view.sort)
        if sort_key is None:
            ordered = chosen[::-1] if view.desc else chosen
        else:
            # stable, also reversed: clusters that sort alike stay in name order
            ordered = sorted(chosen, key=sort_key, reverse=view.desc)
        return self._orders.put(key, (valid, ordered))[1]

    def _shown(self, view: FleetView, members: _Members) -> list[int]:
        """The members `view.show` admits, in name order."""
        if view.show == "all":
            return members.indices
        static = self._static_of(view, members)
        if view.show == "online":
            return static.online
        if view.show == "problems":
            return [i for i in members.indices if self.rank(i) != HEALTHY]
        return self._ranked(SHOW_RANKS[view.show], members, static)

    def _sort_key(self, sort: Sort) -> Callable[[int], Any] | None:
        states = self._states
        match sort:
            case "state":
                return self.rank
            case "seen":
                return lambda i: states[i].last_seen
            case "objects":
                return lambda i: states[i].objects
            case "rate":
                rates = self._live.rates
                return lambda i: rates.get(states[i].name, 0.0)
        return None  # name: the members' own order
