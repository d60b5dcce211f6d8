"""A seeded subset of the fault matrix (bench/faults.py runs all of it; docs/faults.md).

Each test is one row at the QUICK sizes: three agents on the kubernetes source against fake
API servers with churn, a hub process on SQLite, one fault under churn; then every object of
every cluster must match the truth within the deadline, and an unfiltered SSE stream held
across the fault must have seen every revision exactly once.

The two rows where the cluster's resourceVersions go backwards (re-created, etcd restore)
are the ones the hub once never converged on (issue 8): replacing snapshots fixed them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.runner import RowResult, run_row
from tests.faults.scenarios import ROWS
from tests.faults.testbed import QUICK

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.timeout(300)]

SUBSET = [
    pytest.param("hub-sigkill-sqlite", id="hub-sigkill"),
    pytest.param("agent-sigkill-changes-while-down-sqlite", id="agent-sigkill"),
    pytest.param("broker-restart-without-persistence-sqlite", id="broker-no-persistence"),
    pytest.param("duplicated-and-reordered-messages-sqlite", id="duplicated-reordered"),
    pytest.param("cluster-re-created-lower-resourceversions-sqlite", id="cluster-re-created"),
    pytest.param("etcd-restored-to-an-earlier-resourceversion-sqlite", id="etcd-restored"),
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
