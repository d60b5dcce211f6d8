"""A seeded subset of the fault matrix (bench/faults.py runs all of it; docs/faults.md).

Each test is one row at the QUICK sizes: three agents on the kubernetes source against fake
API servers with churn, a hub process on SQLite, one fault under churn; then every object of
every cluster must match the truth within the deadline, and an unfiltered SSE stream held
across the fault must have seen every revision exactly once.

Rows that fail today because of a known bug are strict xfails: when the bug is fixed they
XPASS, which fails the run, and the mark must go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.runner import RowResult, run_row
from tests.faults.scenarios import ROWS
from tests.faults.testbed import QUICK

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(300)]

RECREATED = (
    "hub bug: a cluster re-created under the same name never converges: the hub keeps the old "
    "objects because their resourceVersions are higher than the new cluster's (the stale guard "
    "in store/writer.py upsert and the rv <= listing filter of the sweep), so every digest "
    "differs and the relist repeats forever (issue 8)"
)
ROLLED_BACK = (
    "hub bug: after an etcd restore without a revision bump the hub keeps objects newer than "
    "the restored cluster and never takes the restored versions (stale guard, sweep filter); "
    "the agent makes it worse by retrying watches ahead of the server instead of relisting "
    "(issue 8)"
)
SUBSET = [
    pytest.param("hub-sigkill-sqlite", id="hub-sigkill"),
    pytest.param("agent-sigkill-changes-while-down-sqlite", id="agent-sigkill"),
    pytest.param("broker-restart-without-persistence-sqlite", id="broker-no-persistence"),
    pytest.param("duplicated-and-reordered-messages-sqlite", id="duplicated-reordered"),
    pytest.param(
        "cluster-re-created-lower-resourceversions-sqlite",
        id="cluster-re-created",
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=RECREATED),
    ),
    pytest.param(
        "etcd-restored-to-an-earlier-resourceversion-sqlite",
        id="etcd-restored",
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=ROLLED_BACK),
    ),
]


def describe(result: RowResult) -> str:
    return (
        f"{result.fault}: {result.status} after {result.seconds} s, diff {result.diff}, "
        f"examples {result.examples}, sse {result.sse}, readyz {result.readyz}, "
        f"logs {result.logs}, notes {result.notes}"
    )


@pytest.mark.parametrize("row_id", SUBSET)
async def test_row_converges_to_the_truth_and_the_stream_misses_nothing(
    row_id: str, tmp_path: Path
) -> None:
    result = await run_row(ROWS[row_id], QUICK, tmp_path)

    if result.status in ("error", "skipped"):
        pytest.fail(f"the row could not run: {describe(result)}")
    assert result.converged, describe(result)
    assert result.sse_clean, describe(result)
