"""What a new token may be: its name, role, cluster scope and lifetime, checked the same
way for `transport-informer tokens create` and `POST /tokens`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.access.roles import ClusterScope, Principal, Role, check_principal_name

EXPIRY_PATTERN = r"^(never|[0-9]{1,6}[sm]|[0-9]{1,5}h|[0-9]{1,4}d|[0-9]{1,3}w)$"
"""What `parse_duration` accepts, at most 30 years (as a pattern)."""
_DURATION = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIFETIME_S = 30 * 366 * 86400
SIGN_IN_LINK_TTL_S = 15 * 60
"""A one-time sign-in link (`tokens link`, `make demo`) works once, within this time."""


def parse_duration(text: str) -> float | None:
    """`90s`, `15m`, `12h`, `30d`, `8w` -> seconds; `never` or empty -> None."""
    text = text.strip().lower()
    if text in ("", "never"):
        return None
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"expiry {text[:20]!r}: write e.g. 30d, 12h, 15m, or never")
    seconds = int(m[1]) * _UNITS[m[2]]
    if seconds > MAX_LIFETIME_S:
        raise ValueError("expiry: at most 30 years")
    return float(seconds)


@dataclass(frozen=True, slots=True)
class TokenRequest:
    name: str
    role: Role
    scope: ClusterScope
    lifetime_s: float | None

    @classmethod
    def parse(cls, name: str, role: str, clusters: str, expires: str) -> TokenRequest:
        """ValueError naming the first problem."""
        return cls(
            check_principal_name(name),
            Role.parse(role),
            ClusterScope.parse(clusters),
            parse_duration(expires),
        )

    def grantable_by(self, principal: Principal) -> bool:
        """No one makes a token stronger than themselves: a role at most theirs, and, for a
        scoped principal, exactly their scope."""
        return self.role <= principal.role and self.scope.within(principal.scope)
