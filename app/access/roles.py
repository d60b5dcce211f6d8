"""Roles and principals.

    viewer    reads inventory, streams, workloads, their status, the admission policy
    operator  also creates, changes and deletes workloads (namespaced kinds only)
    admin     also manages tokens and clusters, reads the audit log, deploys anything

Each role includes the ones above it. A principal may be scoped to the clusters whose
labels match a selector (`ClusterScope`): it then sees and places on those clusters only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import IntEnum

from app.informer.selectors import LabelSelector

MAX_SCOPE_CHARS = 1024


class Role(IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        """`viewer`, `operator` or `admin` (any case); ValueError otherwise."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: viewer, operator or admin") from None

    def __str__(self) -> str:
        return self.name.lower()


ROLES = tuple(str(r) for r in Role)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")


def check_principal_name(name: str) -> str:
    """A token or user name: 1-63 of letters, digits, `.`, `_`, `@`, `-`, starting with a
    letter or digit. ValueError naming the problem otherwise."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid name {name[:80]!r}: 1-63 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class ClusterScope:
    """The clusters a principal may see: those whose labels match `selector`; every
    cluster when the selector is empty. `text` is the selector as written, canonical."""

    text: str = ""
    selector: LabelSelector = field(default_factory=LabelSelector, compare=False)

    @classmethod
    def parse(cls, text: str | None) -> ClusterScope:
        """Raises `SelectorError` (a ValueError) for a selector that does not parse."""
        text = (text or "").strip()
        if len(text) > MAX_SCOPE_CHARS:
            raise ValueError(f"a cluster scope is at most {MAX_SCOPE_CHARS} characters")
        selector = LabelSelector.parse(text)
        return cls(selector.canonical(), selector)

    @property
    def everything(self) -> bool:
        return not self.selector.requirements

    def admits(self, labels: dict[str, str] | None) -> bool:
        """Whether a cluster with these labels (None: unknown cluster) is in scope."""
        if self.everything:
            return True
        return labels is not None and self.selector.matches(labels)

    def within(self, other: ClusterScope) -> bool:
        """Whether this scope is `other` or narrower, judged by its text: a scoped
        principal may act on what was made with exactly its own scope."""
        return other.everything or self.text == other.text


EVERYTHING = ClusterScope()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. `via` says how it was authenticated: `token`, `session`,
    `proxy`, `bootstrap` (the configured bootstrap token) or `cli`."""

    name: str
    role: Role
    scope: ClusterScope = EVERYTHING
    via: str = "token"
    session: str | None = field(default=None, repr=False, compare=False)
    """The session id hash, for sessions (CSRF tokens are bound to it)."""

    def may(self, role: Role) -> bool:
        return self.role >= role
