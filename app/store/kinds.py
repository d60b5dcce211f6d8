"""How clients name a kind when kinds collide across API groups, as kubectl names resources.

`Event` exists in the core group (`v1`) and in `events.k8s.io` (`events.k8s.io/v1`); both
can hold an object called `default/x`. A `KindRef` is what a client writes:

- `Kind`: the kind in any group;
- `Kind.group`: the kind in that group only (`Event.events.k8s.io`, `Deployment.apps`);
- `Kind.`: the kind in the core group, whose name is empty (kubectl parses `pods.` the same
  way). This is the one way to name the core group explicitly.

Kinds never contain a dot, so the first dot separates the kind from the group. An
`apiVersion` narrows further, to one version of a group.

Counts are keyed per cluster (`count_keys`): `Kind` while a single apiVersion of a kind is
stored there; when several are, `Kind.group` for each non-core group and `Kind` for the core
group, so the common case (`Pod`, `Deployment`) never changes shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.informer.objects import KindKey

CORE_GROUP = ""


def group_of(api_version: str) -> str:
    """`apps/v1` -> `apps`; `v1` -> `""`, the core group."""
    group, _, _ = api_version.rpartition("/")
    return group


@dataclass(frozen=True, slots=True)
class KindRef:
    kind: str
    group: str | None = None
    """None: any group. `""`: the core group."""

    @classmethod
    def parse(cls, text: str) -> KindRef:
        """`Event`, `Event.events.k8s.io` or `Event.` (core); ValueError for anything else."""
        kind, dot, group = text.partition(".")
        if not kind:
            raise ValueError(
                f"kind must look like Pod, Event.events.k8s.io or Event., got {text!r}"
            )
        return cls(kind, group if dot else None)

    @classmethod
    def exact(cls, api_version: str, kind: str) -> KindRef:
        """The reference naming this kind's group, core included (`Event.`)."""
        return cls(kind, group_of(api_version))

    def admits(self, api_version: str) -> bool:
        """Whether `api_version` is a version of this reference's group."""
        return self.group is None or group_of(api_version) == self.group

    def __str__(self) -> str:
        return self.kind if self.group is None else f"{self.kind}.{self.group}"


def count_key(key: KindKey, collides: bool) -> str:
    """`Kind`, unless other apiVersions of the kind are counted beside it and it is not core."""
    group = group_of(key.api_version)
    return f"{key.kind}.{group}" if collides and group != CORE_GROUP else key.kind


def kind_filter(key: KindKey, collides: bool) -> str:
    """The `kind=` filter that lists exactly what is counted under `count_key(key, collides)`.

    Beside `Event.events.k8s.io`, the key `Event` counts core Events only, which the filter
    `Event` (any group) would over-list: its filter is `Event.`.
    """
    return str(KindRef.exact(key.api_version, key.kind)) if collides else key.kind


def count_keys(counts: Mapping[KindKey, int]) -> dict[str, int]:
    """Object counts per kind, keyed as the module doc says, in key order.

    Two versions of one non-core group (`apps/v1` and `apps/v1beta1`) share the key
    `Kind.group`, and their counts add up.
    """
    versions: dict[str, set[str]] = {}
    for key in counts:
        versions.setdefault(key.kind, set()).add(key.api_version)
    out: dict[str, int] = {}
    for key, n in counts.items():
        name = count_key(key, len(versions[key.kind]) > 1)
        out[name] = out.get(name, 0) + n
    return dict(sorted(out.items()))


def count_key_filter(key: str, keys: Iterable[str]) -> str:
    """`kind_filter` for a key of `count_keys`, knowing only the keys beside it.

    A key without a dot collides exactly when a `key.group` is counted beside it.
    """
    if "." in key:
        return key
    return f"{key}." if any(other.startswith(f"{key}.") for other in keys) else key
