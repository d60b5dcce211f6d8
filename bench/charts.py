"""`make bench`'s last step: PNG charts of the results in bench/results/, for docs/benchmarks.md.

Each chart is drawn from one results file and skipped (with a line saying so) when that file
or the series it needs is missing, so a partial run still charts what it measured:
- bench-latency.png: the change-to-SSE latency distribution (ingest.json, ingest-postgresql.json);
- bench-storage.png: writer and end-to-end throughput against the plain driver (same files);
- bench-fleet-rss.png: hub RSS and list latency against the number of clusters
  (fleet_scale.json);
- bench-rollout.png: clusters Applied and Available over time, first placement and update
  (rollout.json).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"
Reply = dict[str, Any]


def load(name: str) -> Reply | None:
    path = RESULTS / name
    if not path.exists():
        return None
    data: Reply = json.loads(path.read_text())
    return None if "error" in data else data


def latency(out: Path) -> bool:
    runs = [
        (db, load(f))
        for db, f in (("SQLite", "ingest.json"), ("PostgreSQL", "ingest-postgresql.json"))
    ]
    series = [
        (db, r["latency"]) for db, r in runs if r and r.get("latency", {}).get("quantiles_ms")
    ]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for db, lat in series:
        q = lat["quantiles_ms"]
        ax.plot(
            q,
            [100 * i / (len(q) - 1) for i in range(len(q))],
            label=f"{db}, {lat['rate']:,.0f} changes/s (p99 {lat['p99_ms']:.0f} ms)",
        )
    ax.axvline(100, color="grey", linestyle=":", label="goal: p99 < 100 ms")
    ax.set_xscale("log")
    ax.set_xlabel("change-to-SSE latency (ms, log scale)")
    ax.set_ylabel("changes delivered within (%)")
    ax.set_title("Change-to-SSE latency at half of the capacity measured in the same run")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save(fig, out)
    return True


def storage(out: Path) -> bool:
    runs = [
        (db, load(f))
        for db, f in (("SQLite", "ingest.json"), ("PostgreSQL", "ingest-postgresql.json"))
    ]
    runs = [(db, r) for db, r in runs if r and "storage" in r and "sustained" in r]
    if not runs:
        return False
    labels = ["plain driver", "InventoryWriter", "end-to-end (MQTT → SQL)"]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(runs)
    for i, (db, r) in enumerate(runs):
        s = r["storage"]
        values = [
            s["plain_change_rows_per_s"],
            s["writer_change_rows_per_s"],
            r["sustained"]["changes_per_s"],
        ]
        xs = [x + i * width for x in range(len(labels))]
        bars = ax.bar(
            xs, values, width, label=f"{db} ({r['params']['clusters']}x{r['params']['objects']})"
        )
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                f"{v / values[0]:.2f}x",
                (bar.get_x() + bar.get_width() / 2, v),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("changes/s")
    ax.set_title("Changes stored per second, against the plain driver in the same run")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    save(fig, out)
    return True


LIST_SERIES = {
    "cluster_resources_ms": "GET /clusters/{c}/resources",
    "resources_page_ms": "GET /resources?limit=100",
    "overview_ms": "GET / (fleet overview page)",
    "clusters_ms": "GET /clusters (every cluster)",
}


def fleet_rss(out: Path) -> bool:
    r = load("fleet_scale.json") or load("fleet_scale-quick.json")
    steps = [s for s in (r or {}).get("steps", []) if s.get("complete")]
    if not r or not steps:
        return False
    clusters = [s["clusters"] for s in steps]
    fig, (ax, lat) = plt.subplots(1, 2, figsize=(11, 4))
    ax.plot(clusters, [s["hub_rss_mb"] for s in steps], "o-", label="hub RSS, synced")
    ax.plot(clusters, [s["hub_rss_peak_mb"] for s in steps], "x:", label="hub RSS, peak in storm")
    ax.axhline(1024, color="grey", linestyle=":", label="goal: < 1 GB at 10,000")
    ax.set_xlabel("clusters online (each its own MQTT connection)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Hub memory against clusters")
    objects = [s["objects"] for s in steps]
    for key, label in LIST_SERIES.items():
        values = [s.get("latency", {}).get(key) for s in steps]
        if all(v is not None for v in values):
            lat.plot(objects, values, "o-", label=label)
    lat.set_xlabel("objects stored")
    lat.set_ylabel("median latency (ms)")
    lat.set_ylim(bottom=0)
    lat.grid(True, alpha=0.3)
    lat.legend(fontsize=8, loc="upper left")
    lat.set_title("List latency against stored objects")
    save(fig, out)
    return True


def rollout(out: Path) -> bool:
    r = load("rollout.json") or load("rollout-quick.json")
    if not r:
        return False
    phases = [
        (name, r[name])
        for name in ("rollout", "update")
        if isinstance(r.get(name), dict) and r[name].get("curve")
    ]
    if not phases:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, ph in phases:
        columns = ph.get("curve_columns", ["t_s", "sent", "applied", "available"])
        t = [p[columns.index("t_s")] for p in ph["curve"]]
        for column, style in (("applied", "-"), ("available", "--")):
            i = columns.index(column)
            label = f"{name}: {column.capitalize()}"
            ax.plot(t, [p[i] for p in ph["curve"]], linestyle=style, label=label)
    ax.axvline(10, color="grey", linestyle=":", label="goal: all Applied < 10 s")
    ax.set_xlabel("seconds since the request")
    ax.set_ylabel("clusters")
    ax.set_title(f"Rollout of one workload to {r['params']['clusters']:,} clusters")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    save(fig, out)
    return True


def save(fig: Any, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


CHARTS: dict[str, Callable[[Path], bool]] = {
    "bench-latency.png": latency,
    "bench-storage.png": storage,
    "bench-fleet-rss.png": fleet_rss,
    "bench-rollout.png": rollout,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in CHARTS.items():
        drawn = draw(args.out / name)
        print(f"{name}: {'written' if drawn else 'skipped (no results for it)'}")


if __name__ == "__main__":
    main()
