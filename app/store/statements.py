"""The writer's hot statements as driver-level SQL, one text per dialect.

SQLAlchemy Core's executemany cost about 150 µs a change here (parameter processing and
JSON serialization per row and column); these texts go to the driver's executemany with
plain tuples and bodies serialized once. Placeholders are `?` (sqlite3/aiosqlite) or `$n`
(asyncpg). Bodies are JSON text columns on both databases; labels go in as text and become
jsonb on PostgreSQL (`$n::text::jsonb`).
"""

from __future__ import annotations

from dataclasses import dataclass

RESOURCE_COLUMNS = (
    "cluster",
    "api_version",
    "kind",
    "namespace",
    "name",
    "uid",
    "resource_version",
    "revision",
    "deleted",
    "labels",
    "body",
    "created",
    "updated_at",
)
CHANGE_COLUMNS = (
    "revision",
    "cluster",
    "api_version",
    "kind",
    "namespace",
    "name",
    "type",
    "body",
    "at",
    "prev_labels",
)
CLUSTER_COLUMNS = (
    "name",
    "labels",
    "kinds",
    "online",
    "last_seen",
    "first_seen",
    "heartbeat_s",
    "agent_version",
)
KEY_COLUMNS = RESOURCE_COLUMNS[:5]
_JSON = {"labels", "kinds"}
_UPDATED = (
    "uid",
    "resource_version",
    "revision",
    "deleted",
    "labels",
    "body",
    "created",
    "updated_at",
)


def _marks(dialect: str, columns: tuple[str, ...], start: int = 1) -> str:
    if dialect != "postgresql":
        return ", ".join("?" for _ in columns)
    return ", ".join(
        f"${i}::text::jsonb" if c in _JSON else f"${i}" for i, c in enumerate(columns, start)
    )


@dataclass(frozen=True, slots=True)
class Statements:
    dialect: str
    upsert_resource: str
    """Writes the row the writer decided on. It has no resourceVersion guard of its own: the
    writer compared with the stored version inside the same transaction (the only writer,
    serialized on the revision counter), and a snapshot may replace a higher version."""
    insert_change: str
    upsert_cluster: str
    lock_counter: str
    """Locks the revision counter row (writers serialize here) and returns its value."""
    set_counter: str

    @classmethod
    def for_dialect(cls, dialect: str) -> Statements:
        updates = ", ".join(f"{c} = excluded.{c}" for c in _UPDATED)
        upsert = (
            f"INSERT INTO resources ({', '.join(RESOURCE_COLUMNS)}) "
            f"VALUES ({_marks(dialect, RESOURCE_COLUMNS)}) "
            f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {updates}"
        )
        change = (
            f"INSERT INTO changes ({', '.join(CHANGE_COLUMNS)}) "
            f"VALUES ({_marks(dialect, CHANGE_COLUMNS)})"
        )
        cluster_updates = ", ".join(
            f"{c} = excluded.{c}" for c in CLUSTER_COLUMNS if c not in ("name", "first_seen")
        )
        upsert_cluster = (
            f"INSERT INTO clusters ({', '.join(CLUSTER_COLUMNS)}) "
            f"VALUES ({_marks(dialect, CLUSTER_COLUMNS)}) "
            f"ON CONFLICT (name) DO UPDATE SET {cluster_updates}"
        )
        lock_counter = "UPDATE revision_counter SET value = value WHERE id = 1 RETURNING value"
        mark = "$1" if dialect == "postgresql" else "?"
        set_counter = f"UPDATE revision_counter SET value = {mark} WHERE id = 1"
        return cls(dialect, upsert, change, upsert_cluster, lock_counter, set_counter)

    @property
    def mark_seen(self) -> str:
        """A heartbeat: online, last seen now (parameters: last_seen, name)."""
        p = ("$1", "$2") if self.dialect == "postgresql" else ("?", "?")
        return f"UPDATE clusters SET online = TRUE, last_seen = {p[0]} WHERE name = {p[1]}"

    def online_of(self, count: int) -> str:
        """Name and online flag of `count` clusters (one parameter each)."""
        marks = (
            ", ".join(f"${i}" for i in range(1, count + 1))
            if self.dialect == "postgresql"
            else ", ".join("?" * count)
        )
        return f"SELECT name, online FROM clusters WHERE name IN ({marks})"

    def live_versions_of(self, count: int) -> str:
        """Kind, uid and resourceVersion of the live objects of `count` clusters (one
        parameter each): the digests of a whole batch in one statement (covered by
        `ix_resources_digest`)."""
        if self.dialect == "postgresql":
            marks, live = ", ".join(f"${i}" for i in range(1, count + 1)), "NOT deleted"
        else:
            # `+deleted`: never the index on `deleted` (the tombstone index), which SQLite
            # chose without statistics, reading every live row of the fleet (183 ms against
            # 17 ms for 300 clusters of 5,000).
            marks, live = ", ".join("?" * count), "+deleted = 0"
        return (
            "SELECT cluster, api_version, kind, uid, resource_version FROM resources "
            f"WHERE cluster IN ({marks}) AND {live}"
        )

    def stored_keys(self, count: int) -> str:
        """Stored version, tombstone flag, uid and labels (as JSON text) of `count` keys (5
        parameters each), through a join with a VALUES list: it uses the unique index on both
        databases."""
        if self.dialect == "postgresql":
            rows = ", ".join(
                "(" + ", ".join(f"${5 * i + j}::text" for j in range(1, 6)) + ")"
                for i in range(count)
            )
        else:
            rows = ", ".join("(?, ?, ?, ?, ?)" for _ in range(count))
        on = " AND ".join(f"r.{c} = w.{c}" for c in KEY_COLUMNS)
        return (
            f"WITH w ({', '.join(KEY_COLUMNS)}) AS (VALUES {rows}) "
            f"SELECT {', '.join('r.' + c for c in KEY_COLUMNS)}, "
            "r.resource_version, r.deleted, r.uid, "
            f"{'r.labels::text' if self.dialect == 'postgresql' else 'r.labels'} "
            f"FROM resources r JOIN w ON {on}"
        )
