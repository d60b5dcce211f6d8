"""The schema. Alembic migrations own it; these classes describe it to queries.

- `clusters`: one row per cluster that ever said hello.
- `resources`: one row per object key (cluster, apiVersion, kind, namespace, name), live or a
  tombstone (`deleted`), with the newest resourceVersion seen so stale events lose.
- `changes`: the change log. `revision` is global and strictly increasing in commit order,
  assigned from the one-row `revision_counter` inside the writing transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")
_BigId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite only auto-increments INTEGER PRIMARY KEY."""


class Cluster(SQLModel, table=True):
    __tablename__ = "clusters"

    name: str = Field(primary_key=True, max_length=63)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    kinds: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    online: bool = False
    last_seen: float = 0.0
    first_seen: float = 0.0
    heartbeat_s: float = 10.0
    agent_version: str = ""


class Resource(SQLModel, table=True):
    __tablename__ = "resources"
    __table_args__ = (
        UniqueConstraint("cluster", "api_version", "kind", "namespace", "name", name="uq_resource"),
        Index("ix_resources_cluster_kind", "cluster", "kind", "deleted", "id"),
        Index("ix_resources_kind", "kind", "deleted", "id"),
        Index("ix_resources_tombstones", "deleted", "updated_at"),
        # Covers the digest query (live uid:resourceVersion of one cluster's kind), which
        # otherwise visits every row: 0.08 ms instead of 0.45 ms for 200 objects.
        Index(
            "ix_resources_digest",
            "cluster",
            "api_version",
            "kind",
            "deleted",
            "uid",
            "resource_version",
        ),
    )

    id: int | None = Field(
        default=None, sa_column=Column(_BigId, primary_key=True, autoincrement=True)
    )
    cluster: str = Field(max_length=63)
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    resource_version: int = Field(sa_column=Column(BigInteger, nullable=False))
    revision: int = Field(sa_column=Column(BigInteger, nullable=False))
    deleted: bool = False
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    updated_at: float = 0.0


class Change(SQLModel, table=True):
    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_cluster_revision", "cluster", "revision"),)

    revision: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    cluster: str = Field(max_length=63)
    api_version: str
    kind: str
    namespace: str
    name: str
    type: str = Field(max_length=8)
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    at: float = 0.0


class RevisionCounter(SQLModel, table=True):
    __tablename__ = "revision_counter"

    id: int = Field(default=1, primary_key=True)
    value: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))


clusters = Cluster.__table__  # type: ignore[attr-defined]
resources = Resource.__table__  # type: ignore[attr-defined]
changes = Change.__table__  # type: ignore[attr-defined]
revision_counter = RevisionCounter.__table__  # type: ignore[attr-defined]


class Workload(SQLModel, table=True):
    """Desired state held by the hub: manifests to place on the clusters a placement picks."""

    __tablename__ = "workloads"

    name: str = Field(primary_key=True, max_length=63)
    manifests: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    version: int = Field(default=1, sa_column=Column(BigInteger, nullable=False))
    update_strategy: str = "ServerSideApply"
    delete_option: str = "Foreground"
    feedback_rules: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    placement: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    deleting: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


class Delivery(SQLModel, table=True):
    """One workload on one cluster: the outbox row the dispatcher sends until it is acked.

    `version_wanted` is what the cluster should run (0 with `removing`: take it away);
    `version_sent` the last version published, `version_acked` the last the agent applied.
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "next_send_at"),)

    workload: str = Field(primary_key=True, max_length=63)
    cluster: str = Field(primary_key=True, max_length=63)
    version_wanted: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    version_sent: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    version_acked: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    removing: bool = False
    state: str = "Pending"
    conditions: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSONType, nullable=False)
    )
    feedback: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONType, nullable=False)
    )
    last_error: str = ""
    status_hash: str = ""
    attempts: int = 0
    next_send_at: float = 0.0
    sent_at: float = 0.0
    updated_at: float = 0.0


workloads = Workload.__table__  # type: ignore[attr-defined]
deliveries = Delivery.__table__  # type: ignore[attr-defined]
