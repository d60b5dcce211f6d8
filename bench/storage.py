"""`make bench` (storage): the hub's writer against a plain reference doing the same work.

Issue 11 asks how close `InventoryWriter.apply` is to what the database can do. The plain
reference does the same logical work with the driver alone, in the same process, on the
same schema (the hub's, migrated by Alembic, every index included), in transactions of the
hub's batch size: upsert each object row by key with a resourceVersion guard, append a
change-log row with its body, bump the one revision counter. Bodies are the simulated
cluster's objects (about 900 B of JSON), already serialized, as the hub has them from
parsing. Two phases, each timed alone: inserting `--objects` new objects, then `--changes`
modifications of them.

Variants, each on a fresh database:
  writer           InventoryWriter.apply (what ingest runs)
  plain            sqlite3 / asyncpg executemany, hub schema
  plain-bare       the same on a bare schema: the unique key only (what the indexes cost)

Writes bench/results/storage.json and prints a table of rows/s and ratios writer/plain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from app.agent.sources.sim import SimulatedCluster
from app.cli import tune_gc
from app.informer.deltas import Upsert
from app.informer.objects import KindKey, WatchEvent
from app.store.db import create_engine
from app.store.migrate import upgrade_async
from app.store.writer import InventoryWriter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "storage.json"
BATCH = 5000
PG_ADMIN = os.environ.get("TI_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
KINDS = (KindKey("v1", "Pod"), KindKey("v1", "ConfigMap"), KindKey("apps/v1", "Deployment"))

Row = tuple[str, str, str, str, str, str, int, bytes, str]
"""cluster, apiVersion, kind, namespace, name, uid, resourceVersion, body JSON, labels JSON."""


def workload(objects: int, changes: int, seed: int = 11) -> tuple[list[Row], list[Row]]:
    """`objects` simulated objects over clusters of 1,000, then `changes` modifications."""
    rng = random.Random(seed)
    inserts: list[Row] = []
    clusters = max(1, objects // 1000)
    for c in range(clusters):
        sim = SimulatedCluster(
            cluster=f"c{c}", objects=objects // clusters, churn_per_s=0, seed=c, kinds=KINDS
        )
        for kind in KINDS:
            for obj in asyncio.run(sim.list(kind)).items:
                inserts.append(_row(f"c{c}", obj))
    modified: list[Row] = []
    for i in range(changes):
        base = inserts[rng.randrange(len(inserts))]
        obj = orjson.loads(base[7])
        obj["metadata"]["resourceVersion"] = str(10_000_000 + i)
        obj.setdefault("metadata", {}).setdefault("annotations", {})["bench/i"] = str(i)
        modified.append(_row(base[0], obj))
    return inserts, modified


def _row(cluster: str, obj: dict[str, Any]) -> Row:
    meta = obj["metadata"]
    return (
        cluster,
        obj["apiVersion"],
        obj["kind"],
        meta.get("namespace") or "",
        meta["name"],
        meta["uid"],
        int(meta["resourceVersion"]),
        orjson.dumps(obj),
        orjson.dumps(meta.get("labels") or {}).decode(),
    )


def batches(rows: list[Row]) -> Iterator[list[Row]]:
    for i in range(0, len(rows), BATCH):
        yield rows[i : i + BATCH]


@dataclass
class Measure:
    variant: str
    database: str
    insert_rows_per_s: float
    change_rows_per_s: float


# -- the writer ---------------------------------------------------------------------------


STEPS: dict[str, dict[str, float]] = {}
"""Per database and phase, seconds the writer spent in its steps (see `_stepped`)."""


@contextlib.contextmanager
def _stepped(key: str) -> Iterator[None]:
    """Time the writer's steps: the stored-key lookup (`prefetch`), the two executemany
    (`flush`: resources upsert and changes insert); the rest of `apply` is Python (sorting
    out ADDED and MODIFIED, labels, change records) and the revision counter."""
    from app.store import writer as module

    spent = STEPS.setdefault(key, {"prefetch": 0.0, "flush": 0.0, "apply": 0.0})
    originals = {name: getattr(module._Batch, name) for name in ("prefetch", "flush")}

    def timed(name: str, fn: Any) -> Any:
        async def inner(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - started

        return inner

    for name, fn in originals.items():
        setattr(module._Batch, name, timed(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module._Batch, name, fn)


async def run_writer(
    url: str, inserts: list[Row], changes: list[Row], database: str = ""
) -> tuple[float, float]:
    await upgrade_async(url)
    engine = create_engine(url, json_serializer=lambda v: orjson.dumps(v).decode())
    writer = InventoryWriter(engine)
    rates = []
    try:
        for rows, type_ in ((inserts, "ADDED"), (changes, "MODIFIED")):
            deltas = [[_upsert(r, type_) for r in b] for b in batches(rows)]
            key = f"{database} {'insert' if type_ == 'ADDED' else 'change'}"
            with _stepped(key):
                started = time.perf_counter()
                for batch in deltas:
                    await writer.apply(batch)
                took = time.perf_counter() - started
            STEPS[key]["apply"] += took
            rates.append(len(rows) / took)
    finally:
        await engine.dispose()
    return rates[0], rates[1]


def _upsert(row: Row, type_: str) -> Upsert:
    """An Upsert as the hub's parser makes it (the JSON written once, at parse time)."""
    event = WatchEvent.of(type_, orjson.loads(row[7]))
    return Upsert(row[0], WatchEvent(event.type, event.object, event.ref, row[7]))


# -- plain SQLite -------------------------------------------------------------------------

_COLUMNS = (
    "cluster, api_version, kind, namespace, name, uid, resource_version, revision, deleted, "
    "labels, body, created, updated_at"
)
_KEY = "cluster, api_version, kind, namespace, name"
_UPDATE = "uid, resource_version, revision, deleted, labels, body, updated_at"
_CHANGE = "revision, cluster, api_version, kind, namespace, name, type, body, at"


def _sqlite_upsert(guard: str) -> str:
    sets = ", ".join(f"{c} = excluded.{c}" for c in _UPDATE.split(", "))
    return (
        f"INSERT INTO resources ({_COLUMNS}) VALUES ({', '.join('?' * 13)}) "
        f"ON CONFLICT ({_KEY}) DO UPDATE SET {sets} WHERE {guard}"
    )


def run_plain_sqlite(path: Path, inserts: list[Row], changes: list[Row]) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
        conn.execute(f"PRAGMA {pragma}")
    upsert = _sqlite_upsert("resources.resource_version < excluded.resource_version")
    change = f"INSERT INTO changes ({_CHANGE}) VALUES ({', '.join('?' * 9)})"
    rates = []
    for rows, type_ in ((inserts, "ADDED"), (changes, "MODIFIED")):
        started = time.perf_counter()
        for batch in batches(rows):
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            (top,) = conn.execute(
                "UPDATE revision_counter SET value = value + ? WHERE id = 1 RETURNING value",
                (len(batch),),
            ).fetchone()
            base = top - len(batch)
            conn.executemany(
                upsert,
                [
                    (*r[:7], base + i + 1, False, r[8], r[7].decode(), "", now)
                    for i, r in enumerate(batch)
                ],
            )
            conn.executemany(
                change,
                [(base + i + 1, *r[:5], type_, r[7].decode(), now) for i, r in enumerate(batch)],
            )
            conn.execute("COMMIT")
        rates.append(len(rows) / (time.perf_counter() - started))
    conn.close()
    return rates[0], rates[1]


def bare_sqlite(path: Path) -> None:
    """The hub's tables with no index but the unique key (what the indexes cost)."""
    conn = sqlite3.connect(path)
    conn.executescript(
        f"""
        CREATE TABLE resources (id INTEGER PRIMARY KEY, cluster TEXT, api_version TEXT,
          kind TEXT, namespace TEXT, name TEXT, uid TEXT, resource_version BIGINT,
          revision BIGINT, deleted BOOLEAN, labels JSON, body TEXT, created TEXT,
          updated_at FLOAT, UNIQUE ({_KEY}));
        CREATE TABLE changes (revision BIGINT PRIMARY KEY, cluster TEXT, api_version TEXT,
          kind TEXT, namespace TEXT, name TEXT, type TEXT, body TEXT, at FLOAT);
        CREATE TABLE revision_counter (id INTEGER PRIMARY KEY, value BIGINT);
        INSERT INTO revision_counter VALUES (1, 0);
        """
    )
    conn.close()


# -- plain PostgreSQL ---------------------------------------------------------------------


async def run_plain_pg(url: str, inserts: list[Row], changes: list[Row]) -> tuple[float, float]:
    conn = await asyncpg.connect(url)
    sets = ", ".join(f"{c} = excluded.{c}" for c in _UPDATE.split(", "))
    marks = ", ".join(
        f"${i}::text::jsonb" if c == "labels" else f"${i}"
        for i, c in enumerate(_COLUMNS.split(", "), 1)
    )
    upsert = (
        f"INSERT INTO resources ({_COLUMNS}) VALUES ({marks}) ON CONFLICT ({_KEY}) "
        f"DO UPDATE SET {sets} WHERE resources.resource_version < excluded.resource_version"
    )
    change = f"INSERT INTO changes ({_CHANGE}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    rates = []
    try:
        for rows, type_ in ((inserts, "ADDED"), (changes, "MODIFIED")):
            started = time.perf_counter()
            for batch in batches(rows):
                now = time.time()
                async with conn.transaction():
                    top = await conn.fetchval(
                        "UPDATE revision_counter SET value = value + $1 WHERE id = 1 "
                        "RETURNING value",
                        len(batch),
                    )
                    base = top - len(batch)
                    await conn.executemany(
                        upsert,
                        [
                            (*r[:7], base + i + 1, False, r[8], r[7].decode(), "", now)
                            for i, r in enumerate(batch)
                        ],
                    )
                    await conn.executemany(
                        change,
                        [
                            (base + i + 1, *r[:5], type_, r[7].decode(), now)
                            for i, r in enumerate(batch)
                        ],
                    )
            rates.append(len(rows) / (time.perf_counter() - started))
    finally:
        await conn.close()
    return rates[0], rates[1]


async def create_pg_database() -> str:
    """A private database of the local PostgreSQL; its URL."""
    name = f"ti_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def drop_pg_database(url: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def pg_database() -> Any:
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def pg_variants(inserts: list[Row], changes: list[Row]) -> list[Measure]:
    out = []
    async with pg_database() as url:
        rates = await run_writer(url, inserts, changes, "postgresql")
        out.append(Measure("writer", "postgresql", *rates))
    async with pg_database() as url:
        await upgrade_async(url)
        out.append(Measure("plain", "postgresql", *await run_plain_pg(url, inserts, changes)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 objects and changes")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    objects = 20_000 if args.quick else args.objects
    changes = 20_000 if args.quick else args.changes
    tune_gc()
    inserts, modified = workload(objects, changes)
    results: list[Measure] = []
    with tempfile.TemporaryDirectory(prefix="ti-storage-") as tmp:
        url = f"sqlite:///{tmp}/writer.db"
        results.append(
            Measure("writer", "sqlite", *asyncio.run(run_writer(url, inserts, modified, "sqlite")))
        )
        asyncio.run(upgrade_async(f"sqlite:///{tmp}/plain.db"))
        results.append(
            Measure("plain", "sqlite", *run_plain_sqlite(Path(tmp) / "plain.db", inserts, modified))
        )
        bare_sqlite(Path(tmp) / "bare.db")
        results.append(
            Measure(
                "plain-bare", "sqlite", *run_plain_sqlite(Path(tmp) / "bare.db", inserts, modified)
            )
        )
    if not args.no_postgres:
        results += asyncio.run(pg_variants(inserts, modified))
    ratios = {}
    for db in ("sqlite", "postgresql"):
        got = {m.variant: m for m in results if m.database == db}
        if "writer" in got and "plain" in got:
            ratios[db] = {
                "insert": got["writer"].insert_rows_per_s / got["plain"].insert_rows_per_s,
                "change": got["writer"].change_rows_per_s / got["plain"].change_rows_per_s,
            }
    for m in results:
        print(
            f"{m.database:10} {m.variant:11} insert {m.insert_rows_per_s:>9,.0f} rows/s   "
            f"change {m.change_rows_per_s:>9,.0f} rows/s"
        )
    for db, r in ratios.items():
        print(f"{db:10} writer/plain: insert {r['insert']:.2f}, change {r['change']:.2f}")
    for key, spent in STEPS.items():
        other = spent["apply"] - spent["prefetch"] - spent["flush"]
        print(
            f"{key:18} writer steps: lookup {spent['prefetch']:.2f} s, executemany "
            f"{spent['flush']:.2f} s, Python and counter {other:.2f} s of {spent['apply']:.2f} s"
        )
    doc = {
        "benchmark": "storage",
        "params": {"objects": objects, "changes": changes, "batch": BATCH},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "date": time.strftime("%Y-%m-%d"),
        },
        "results": [asdict(m) for m in results],
        "writer_over_plain": ratios,
        "writer_steps_s": STEPS,
    }
    out = RESULTS.with_name("storage-quick.json") if args.quick else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
