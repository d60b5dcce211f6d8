"""bench/charts.py draws each chart from the results it needs and skips the rest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import charts

PNG = b"\x89PNG\r\n\x1a\n"


def ingest_result(rate: float) -> dict[str, object]:
    quantiles = [float(i) for i in range(101)]
    return {
        "params": {"clusters": 10, "objects": 200},
        "storage": {"plain_change_rows_per_s": 20_000.0, "writer_change_rows_per_s": 12_000.0},
        "sustained": {"changes_per_s": 10_000.0},
        "latency": {"rate": rate, "p99_ms": 99.0, "quantiles_ms": quantiles},
    }


def fleet_scale_result() -> dict[str, object]:
    latency = {"cluster_resources_ms": 10.0, "resources_page_ms": 9.0, "overview_ms": 30.0}
    steps = [
        {
            "clusters": n,
            "objects": 30 * n,
            "complete": True,
            "hub_rss_mb": n / 10,
            "hub_rss_peak_mb": n / 8,
            "latency": latency,
        }
        for n in (1000, 5000)
    ]
    return {"params": {}, "steps": steps}


def rollout_result() -> dict[str, object]:
    phase = {
        "curve_columns": ["t_s", "sent", "applied", "available"],
        "curve": [[0.0, 0, 0, 0], [1.0, 10, 5, 4], [2.0, 10, 10, 10]],
    }
    return {"params": {"clusters": 10}, "rollout": phase, "update": phase}


def test_charts_are_drawn_from_results_and_skipped_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "ingest.json").write_text(json.dumps(ingest_result(5000.0)))
    (results / "ingest-postgresql.json").write_text(json.dumps({"error": "KeyboardInterrupt()"}))
    monkeypatch.setattr(charts, "RESULTS", results)

    charts.main(["--out", str(tmp_path / "out")])

    drawn = {p.name for p in (tmp_path / "out").iterdir()}
    assert drawn == {"bench-latency.png", "bench-storage.png"}
    for name in drawn:
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG)
    printed = capsys.readouterr().out
    assert "bench-rollout.png: skipped" in printed
    assert "bench-fleet-rss.png: skipped" in printed

    (results / "fleet_scale.json").write_text(json.dumps(fleet_scale_result()))
    (results / "rollout-quick.json").write_text(json.dumps(rollout_result()))
    charts.main(["--out", str(tmp_path / "out")])
    for name in ("bench-fleet-rss.png", "bench-rollout.png"):
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG)
