"""The agent's workload runner against a simulated cluster: acks, duplicates, drift."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.agent.sources.sim import SimulatedCluster
from app.agent.workloads import OWNER_LABEL, WorkloadRunner, drifted, json_path
from app.informer.objects import KindKey
from app.transport.messages import WorkloadApply, WorkloadRemove, WorkloadStatus

CONFIGMAP = KindKey("v1", "ConfigMap")


def manifest(name: str = "settings", value: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {"value": value},
    }


def spec(
    version: int, strategy: str = "ServerSideApply", delete: str = "Foreground", value: str = "1"
) -> WorkloadApply:
    return WorkloadApply(
        "w",
        version,
        [manifest(value=value)],
        strategy,
        delete,
        [{"name": "value", "jsonPath": ".data.value"}],
    )


@pytest.fixture
def sim() -> SimulatedCluster:
    return SimulatedCluster(cluster="c", objects=0, churn_per_s=0, seed=1, kinds=[CONFIGMAP])


def runner(sim: SimulatedCluster) -> tuple[WorkloadRunner, list[WorkloadStatus]]:
    sent: list[WorkloadStatus] = []
    return WorkloadRunner(sim, sent.append, drift_s=0.01), sent


def conditions(status: WorkloadStatus) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status.conditions}


async def drift_pass(r: WorkloadRunner) -> None:
    task = asyncio.ensure_future(r.run())
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_apply_acks_with_conditions_and_feedback(sim: SimulatedCluster) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1))
    stored = sim.get(CONFIGMAP, "shop", "settings")
    assert stored and stored["metadata"]["labels"][OWNER_LABEL] == "w"
    (status,) = sent
    assert status.version == 1 and not status.removed
    assert conditions(status) == {"Applied": "True", "Available": "True", "Degraded": "False"}
    assert status.feedback == {"value": {"ConfigMap/shop/settings": "1"}}
    assert r.held_versions() == {"w": 1}


async def test_a_duplicate_or_older_version_changes_nothing_but_is_acked(
    sim: SimulatedCluster,
) -> None:
    r, sent = runner(sim)
    await r.apply(spec(2))
    rv = sim.resource_version
    await r.apply(spec(2, value="changed"))
    await r.apply(spec(1, value="older"))
    assert sim.resource_version == rv  # nothing applied again
    assert [s.version for s in sent] == [2, 2, 2]
    assert sim.get(CONFIGMAP, "shop", "settings")["data"] == {"value": "1"}  # type: ignore[index]


async def test_server_side_apply_restores_changed_and_deleted_objects(
    sim: SimulatedCluster,
) -> None:
    r, _ = runner(sim)
    await r.apply(spec(1))
    sim.apply(
        {
            **manifest(value="tampered"),
            "metadata": {"name": "settings", "namespace": "shop", "labels": {OWNER_LABEL: "w"}},
        }
    )
    await drift_pass(r)
    assert sim.get(CONFIGMAP, "shop", "settings")["data"] == {"value": "1"}  # type: ignore[index]
    sim.delete(CONFIGMAP, "shop", "settings")
    await drift_pass(r)
    assert sim.get(CONFIGMAP, "shop", "settings") is not None


async def test_create_only_recreates_but_leaves_changes(sim: SimulatedCluster) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1, strategy="CreateOnly"))
    sim.apply(
        {
            **manifest(value="theirs"),
            "metadata": {"name": "settings", "namespace": "shop", "labels": {OWNER_LABEL: "w"}},
        }
    )
    await drift_pass(r)
    assert sim.get(CONFIGMAP, "shop", "settings")["data"] == {"value": "theirs"}  # type: ignore[index]
    assert conditions(sent[-1])["Degraded"] == "True"
    sim.delete(CONFIGMAP, "shop", "settings")
    await drift_pass(r)
    assert sim.get(CONFIGMAP, "shop", "settings") is not None


async def test_read_only_never_writes_and_reports(sim: SimulatedCluster) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1, strategy="ReadOnly"))
    assert sim.get(CONFIGMAP, "shop", "settings") is None
    assert conditions(sent[-1]) == {"Applied": "True", "Available": "False", "Degraded": "True"}


async def test_removal_deletes_with_foreground_and_leaves_with_orphan(
    sim: SimulatedCluster,
) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1, delete="Orphan"))
    await r.remove(WorkloadRemove("w", 1, "Orphan"))
    assert sim.get(CONFIGMAP, "shop", "settings") is not None and sent[-1].removed
    # an agent restarted since the apply holds nothing, and still finds what it applied
    fresh, sent = runner(sim)
    await fresh.remove(WorkloadRemove("w", 1, "Foreground"))
    assert sim.get(CONFIGMAP, "shop", "settings") is None and sent[-1].removed


def test_json_path_follows_fields_and_indexes() -> None:
    obj = {"status": {"conditions": [{"type": "Ready"}], "readyReplicas": 2}}
    assert json_path(obj, ".status.readyReplicas") == 2
    assert json_path(obj, ".status.conditions[0].type") == "Ready"
    assert json_path(obj, ".status.conditions[3].type") is None
    assert json_path(obj, ".spec.replicas") is None


async def test_status_resync_resends_only_what_the_hub_lacks(sim: SimulatedCluster) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1))
    current = sent[-1].status_hash
    sent.clear()
    r.resend_differing({"w": current})
    assert sent == []
    r.resend_differing({"w": "stale"})
    assert [s.status_hash for s in sent] == [current]


def test_fields_the_server_adds_are_not_drift() -> None:
    desired = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
    }
    defaulted = {
        **desired,
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate"},
            "template": {"spec": {"containers": [{"name": "c", "imagePullPolicy": "Always"}]}},
        },
    }
    assert not drifted(defaulted, desired)
    assert drifted({**desired, "spec": {"replicas": 3}}, desired)


class FlakyCluster(SimulatedCluster):
    """Fails its reads while `broken` is set, like an API server restarting."""

    broken = False

    async def get_object(self, kind: KindKey, namespace: str, name: str) -> Any:
        if self.broken:
            raise ConnectionError("API server unavailable")
        return await super().get_object(kind, namespace, name)


async def test_a_failing_cluster_api_is_reported_and_survived() -> None:
    sim = FlakyCluster(cluster="c", objects=0, churn_per_s=0, seed=1, kinds=[CONFIGMAP])
    r, sent = runner(sim)
    await r.apply(spec(1))
    sim.broken = True
    await drift_pass(r)
    assert "API server unavailable" in sent[-1].error
    sim.broken = False
    await drift_pass(r)
    assert sent[-1].error == "" and conditions(sent[-1])["Available"] == "True"


def bad_spec(version: int, **metadata: Any) -> WorkloadApply:
    broken = manifest("broken")
    broken["metadata"].update(metadata)
    return WorkloadApply(
        "w", version, [manifest("other"), broken], "ServerSideApply", "Foreground", []
    )


def applied_reason(status: WorkloadStatus) -> tuple[str, str, str]:
    (applied,) = (c for c in status.conditions if c["type"] == "Applied")
    return applied["status"], applied["reason"], applied["message"]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"labels": "notadict"}, "ConfigMap shop/broken: metadata.labels must map strings"),
        ({"namespace": {}}, "ConfigMap broken: metadata.namespace must be a string, got dict"),
    ],
)
async def test_an_invalid_manifest_applies_nothing_and_is_acked_as_failed(
    sim: SimulatedCluster, metadata: dict[str, Any], message: str
) -> None:
    r, sent = runner(sim)
    await r.apply(bad_spec(1, **metadata))
    assert sim.get(CONFIGMAP, "shop", "other") is None  # not even the valid one
    (status,) = sent
    assert status.version == 1 and message in status.error
    assert applied_reason(status) == ("False", "InvalidManifest", status.error)
    # a resend is answered with the same failed status; drift checks leave it alone
    await r.apply(bad_spec(1, **metadata))
    await drift_pass(r)
    assert sent == [status, status]
    assert r.held_versions() == {"w": 1}


async def test_a_valid_version_after_an_invalid_one_is_applied_and_cleans_up(
    sim: SimulatedCluster,
) -> None:
    r, sent = runner(sim)
    await r.apply(spec(1))
    await r.apply(bad_spec(2, labels={"n": 1}))
    assert sim.get(CONFIGMAP, "shop", "settings") is not None  # version 1 stays until replaced
    assert sent[-1].error
    await r.apply(WorkloadApply("w", 3, [manifest("next")], "ServerSideApply", "Foreground", []))
    assert sent[-1].version == 3 and sent[-1].error == ""
    assert conditions(sent[-1]) == {"Applied": "True", "Available": "True", "Degraded": "False"}
    assert sim.get(CONFIGMAP, "shop", "next") is not None
    assert sim.get(CONFIGMAP, "shop", "settings") is None  # version 1's object, deleted


async def test_null_labels_get_the_owner_label(sim: SimulatedCluster) -> None:
    r, sent = runner(sim)
    with_null = manifest()
    with_null["metadata"]["labels"] = None
    await r.apply(WorkloadApply("w", 1, [with_null], "ServerSideApply", "Foreground", []))
    assert sent[-1].error == ""
    stored = sim.get(CONFIGMAP, "shop", "settings")
    assert stored and stored["metadata"]["labels"] == {OWNER_LABEL: "w"}


async def test_hold_failed_answers_the_version_but_never_replaces_a_newer_one(
    sim: SimulatedCluster,
) -> None:
    r, sent = runner(sim)
    await r.hold_failed(spec(1), "applying failed: RuntimeError('boom')")
    assert sent[-1].error == "applying failed: RuntimeError('boom')"
    assert applied_reason(sent[-1])[:2] == ("False", "ApplyFailed")
    await r.apply(spec(2))
    await r.hold_failed(spec(1), "late")
    assert sent[-1].version == 2 and sent[-1].error == ""
    assert r.held_versions() == {"w": 2}
