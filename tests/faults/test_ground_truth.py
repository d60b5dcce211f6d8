"""The ground truth the fault matrix judges by: the fake API server and the sim source."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration

from app.agent.sources.kube_api import KubeApi, KubeApiError
from app.agent.sources.sim import SimulatedCluster, truth_endpoint
from app.broker import free_port
from app.informer.objects import KindKey
from tests.agent import fake_kube_api
from tests.agent.fake_kube_api import FakeKubeApi
from tests.agent.fake_kube_truth import parse_truth
from tests.conftest import wait_until
from tests.faults.churn import Churn
from tests.faults.processes import ManagedProcess

POD = KindKey("v1", "Pod")
CONFIG_MAP = KindKey("v1", "ConfigMap")


def listed(listing_items: list[dict[str, object]]) -> dict[str, tuple[str, int]]:
    out = {}
    for item in listing_items:
        meta = item["metadata"]
        assert isinstance(meta, dict)
        out[f"{meta.get('namespace', '')}/{meta['name']}"] = (
            meta["uid"],
            int(meta["resourceVersion"]),
        )
    return out


def truth_of(api: FakeKubeApi, kind: str) -> dict[str, tuple[str, int]]:
    return {f"{ns}/{name}": v for (k, ns, name), v in api.truth().items() if k == kind}


async def test_a_paginated_list_under_churn_is_the_snapshot_of_its_first_page() -> None:
    async with FakeKubeApi.serving() as api, ApiClient(Configuration(host=api.url)) as client:
        churn = Churn(api, objects=400, rate=0, seed=1)
        churn.populate()
        kube = KubeApi(client)
        resource = await kube.resource(POD)
        first = await kube.get_json(resource.collection_path, [("limit", "50")])
        expected = truth_of(api, "v1/Pod")
        items = list(first["items"])
        token = first["metadata"]["continue"]
        while token:
            for _ in range(40):  # deletes, creates and modifies between the pages
                churn.change_once()
            page = await kube.get_json(
                resource.collection_path, [("limit", "50"), ("continue", token)]
            )
            items += page["items"]
            token = page["metadata"].get("continue")

        assert listed(items) == expected
        assert truth_of(api, "v1/Pod") != expected


async def test_a_watch_ahead_of_the_server_is_refused_as_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fake_kube_api, "TOO_LARGE_WAIT_S", 0.2)
    async with FakeKubeApi.serving() as api, httpx.AsyncClient(base_url=api.url) as http:
        api.create("pods", "web")
        response = await http.get(
            "/api/v1/pods", params={"watch": "1", "resourceVersion": str(api.rv + 5)}
        )

    assert response.status_code == 504
    body = response.json()
    assert body["reason"] == "Timeout"
    assert body["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"


async def test_recreate_keeps_names_with_new_uids_and_lower_resource_versions() -> None:
    async with FakeKubeApi.serving() as api:
        Churn(api, objects=50, rate=0, seed=2).populate()
        before = api.truth()
        api.recreate(start_rv=10)
        after = api.truth()

    assert after.keys() == before.keys()
    assert all(after[k][0] != before[k][0] for k in before)
    assert max(rv for _, rv in after.values()) < min(rv for _, rv in before.values())


async def test_restore_brings_back_the_backup_and_expires_its_continue_tokens() -> None:
    async with FakeKubeApi.serving() as api, httpx.AsyncClient(base_url=api.url) as http:
        churn = Churn(api, objects=100, rate=0, seed=3)
        churn.populate()
        backup = api.backup()
        saved = api.truth()
        first = (await http.get("/api/v1/pods", params={"limit": "5"})).json()
        for _ in range(200):
            churn.change_once()
        assert api.truth() != saved

        api.restore(backup)
        churn.refresh()
        churn.change_once()  # churn goes on from the restored names

        late_page = await http.get(
            "/api/v1/pods", params={"limit": "5", "continue": first["metadata"]["continue"]}
        )
    assert api.rv == backup.rv + 1
    assert len(set(api.truth().items()) ^ set(saved.items())) <= 2
    assert late_page.status_code == 410


async def test_truth_endpoint_of_the_fake_serves_the_truth() -> None:
    async with FakeKubeApi.serving() as api, httpx.AsyncClient(base_url=api.url) as http:
        Churn(api, objects=30, rate=0, seed=4).populate()
        document = (await http.get("/debug/truth")).json()

    assert parse_truth(document) == api.truth()
    assert document["resourceVersion"] == str(api.rv)


def test_churn_with_a_seed_makes_the_same_changes() -> None:
    async def run(seed: int) -> list[tuple[str, str, str]]:
        async with FakeKubeApi.serving() as api:
            churn = Churn(api, objects=200, rate=0, seed=seed)
            churn.populate()
            for _ in range(300):
                churn.change_once()
            return sorted((k, ns, n) for k, ns, n in api.truth())

    first, again = asyncio.run(run(7)), asyncio.run(run(7))
    assert first == again
    assert 180 <= len(first) <= 220


async def test_sim_truth_endpoint_serves_the_clusters_objects() -> None:
    sim = SimulatedCluster(cluster="c", objects=20, churn_per_s=0, seed=1)
    async with truth_endpoint(sim) as port, httpx.AsyncClient() as http:
        truth = (await http.get(f"http://127.0.0.1:{port}/truth")).json()
        other = await http.get(f"http://127.0.0.1:{port}/elsewhere")

    assert truth == sim.truth()
    assert len(parse_truth(truth)) == sim.count()  # the fake API server's format
    assert truth["resourceVersion"] == str(sim.resource_version)
    assert other.status_code == 404


async def test_sim_truth_endpoint_survives_a_client_that_sends_nothing() -> None:
    sim = SimulatedCluster(cluster="c", objects=2, churn_per_s=0, seed=1)
    async with truth_endpoint(sim) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/truth")).status_code == 200


async def test_agent_process_serves_its_sim_truth_on_the_debug_port(tmp_path: Path) -> None:
    port = free_port()
    agent = ManagedProcess.app(
        "agent",
        "agent",
        *("--cluster", "c", "--sim-objects", "25", "--sim-churn", "0", "--sim-seed", "3"),
        *("--broker", "mqtt://127.0.0.1:1"),  # no broker: the truth is served all the same
        log_dir=tmp_path,
        TI_DEBUG_TRUTH_PORT=str(port),
    )
    agent.start()
    try:
        async with httpx.AsyncClient() as http:

            async def served() -> bool:
                try:
                    return (await http.get(f"http://127.0.0.1:{port}/truth")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(served, within=30, what="the truth endpoint")
            truth = (await http.get(f"http://127.0.0.1:{port}/truth")).json()
    finally:
        await asyncio.to_thread(agent.stop)
    expected = SimulatedCluster(cluster="c", objects=25, churn_per_s=0, seed=3)
    assert truth == expected.truth()


def test_the_debug_truth_port_needs_the_sim_source() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "agent", "--source-kind", "kubernetes"],
        capture_output=True,
        text=True,
        env={**os.environ, "TI_DEBUG_TRUTH_PORT": "1"},
    )
    assert result.returncode != 0
    assert "--debug-truth-port" in result.stderr


async def test_kube_api_error_for_too_large_is_not_an_expiry() -> None:
    """The agent treats 504 too-large as retryable, not as 410: a fact the matrix relies on
    when it explains the etcd-restore row."""
    from app.agent.sources.kube_api import ResourceExpired, error_from_status

    error = error_from_status(fake_kube_api._too_large(10, 5), 504)
    assert isinstance(error, KubeApiError)
    assert not isinstance(error, ResourceExpired)
