"""A delivery's state, in Python and as the same SQL expression, so the database can count
and filter deliveries by state without loading them.

    Deleting   being removed from the cluster
    Pending    the wanted version is not sent yet (or waits for a resend)
    Delivered  sent, not yet acknowledged
    Failed     acknowledged with an error
    Degraded   applied; a feedback condition `Degraded` is True
    Available  applied; `Available` is True (and not Degraded)
    Applied    applied; neither condition says more

Everything but the conditions is a plain column, so SQL derives the state from the columns
(`state_sql`) rather than storing it: the version columns are written in several places
(`sync_deliveries`, `mark_sent`, `record_status`, `resync_cluster`) and a stored copy would
have to follow each. The conditions are a JSON document SQL cannot read portably (and
PostgreSQL's jsonb refuses U+0000, which an agent's condition message may hold): what the
state needs of them, `health`, is stored beside them by the one write that sets them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import ColumnElement, Table, case, literal

State = Literal["Available", "Applied", "Delivered", "Pending", "Failed", "Degraded", "Deleting"]
STATES: tuple[State, ...] = (
    "Available",
    "Applied",
    "Delivered",
    "Pending",
    "Failed",
    "Degraded",
    "Deleting",
)
"""In the order a progress bar shows them: done first."""
PROBLEMS_FIRST: tuple[State, ...] = (
    "Failed",
    "Degraded",
    "Deleting",
    "Pending",
    "Delivered",
    "Applied",
    "Available",
)
Health = Literal["Degraded", "Available", ""]


def health_of(conditions: Sequence[Mapping[str, Any]]) -> Health:
    """What the feedback conditions say of an applied delivery."""
    status = {c.get("type"): c.get("status") for c in conditions if isinstance(c, Mapping)}
    if status.get("Degraded") == "True":
        return "Degraded"
    if status.get("Available") == "True":
        return "Available"
    return ""


def delivery_state(
    *,
    removing: bool,
    version_wanted: int,
    version_sent: int,
    version_acked: int,
    last_error: str,
    health: str,
) -> State:
    if removing:
        return "Deleting"
    if version_acked < version_wanted:
        return "Delivered" if version_sent >= version_wanted else "Pending"
    if last_error:
        return "Failed"
    if health == "Degraded":
        return "Degraded"
    if health == "Available":
        return "Available"
    return "Applied"


def state_sql(table: Table) -> ColumnElement[str]:
    """`delivery_state` of each row of `deliveries`, as an SQL expression."""
    c = table.c
    return case(
        (c.removing.is_(True), literal("Deleting")),
        (
            c.version_acked < c.version_wanted,
            case((c.version_sent >= c.version_wanted, "Delivered"), else_="Pending"),
        ),
        (c.last_error != "", literal("Failed")),
        (c.health == "Degraded", literal("Degraded")),
        (c.health == "Available", literal("Available")),
        else_=literal("Applied"),
    )


def rank_sql(state: ColumnElement[str]) -> ColumnElement[int]:
    """Problems first: the position of `state` in `PROBLEMS_FIRST`."""
    return case(*((state == s, i) for i, s in enumerate(PROBLEMS_FIRST)), else_=len(STATES))
