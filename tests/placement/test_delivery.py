"""Workloads from the hub to chosen clusters, acknowledged, with status back (real broker)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from app.agent.service import Agent
from app.agent.sources.sim import SimulatedCluster
from app.broker import Mosquitto
from app.informer.objects import KindKey
from app.store import workloads as store
from app.transport.messages import WorkloadApply
from tests.conftest import wait_until
from tests.harness import LiveHub, live_hub, sim_agent

DEPLOYMENT, CONFIGMAP = KindKey("apps/v1", "Deployment"), KindKey("v1", "ConfigMap")


def web_workload(name: str = "web", replicas: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "manifests": [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"{name}-app", "namespace": "shop"},
                "spec": {
                    "replicas": replicas,
                    "template": {
                        "spec": {"containers": [{"name": "web", "image": f"nginx:1.{replicas}"}]}
                    },
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-config", "namespace": "shop"},
                "data": {"greeting": "hello"},
            },
        ],
        "placement": {"labelSelector": "env=prod"},
        "feedbackRules": [{"name": "replicas", "jsonPath": ".spec.replicas", "kind": "Deployment"}],
        **extra,
    }


@asynccontextmanager
async def fleet(broker: Mosquitto, db: str) -> AsyncIterator[tuple[LiveHub, dict[str, Any]]]:
    """A hub and three sim agents: prod-1 and prod-2 (env=prod), dev-1 (env=dev)."""
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(live_hub(broker_url=broker.url, database_url=db))
        agents: dict[str, Any] = {}
        for name, env in (("prod-1", "prod"), ("prod-2", "prod"), ("dev-1", "dev")):
            agent, sim = sim_agent(
                name, broker.url, labels={"env": env}, kinds=(DEPLOYMENT, CONFIGMAP)
            )
            await stack.enter_async_context(agent)
            agents[name] = (agent, sim)
        await wait_until(lambda: _clusters_known(hub, 3), what="three clusters")
        yield hub, agents


async def _clusters_known(hub: LiveHub, n: int) -> bool:
    return len((await hub.get("/clusters"))["items"]) == n


async def states(hub: LiveHub, name: str) -> dict[str, tuple[str, int]]:
    doc = await hub.get(f"/workloads/{name}")
    return {c["cluster"]: (c["state"], c["versionApplied"]) for c in doc["clusters"]}


async def reaches(hub: LiveHub, name: str, expected: dict[str, tuple[str, int]]) -> bool:
    return await states(hub, name) == expected


def sim_of(agents: dict[str, Any], cluster: str) -> SimulatedCluster:
    sim: SimulatedCluster = agents[cluster][1]
    return sim


async def test_a_workload_reaches_exactly_the_matching_clusters_and_reports_back(
    broker: Mosquitto, database_url: str
) -> None:
    async with fleet(broker, database_url) as (hub, agents):
        created = await hub.http.post("/workloads", json=web_workload())
        assert created.status_code == 201, created.text
        available = {"prod-1": ("Available", 1), "prod-2": ("Available", 1)}
        await wait_until(
            lambda: reaches(hub, "web", available), within=15, what="Available on the prod clusters"
        )
        assert sim_of(agents, "dev-1").get(DEPLOYMENT, "shop", "web-app") is None
        deployment = sim_of(agents, "prod-1").get(DEPLOYMENT, "shop", "web-app")
        assert (
            deployment
            and deployment["metadata"]["labels"]["transport-informer.io/workload"] == "web"
        )
        doc = await hub.get("/workloads/web")
        assert doc["clusters"][0]["feedback"] == {"replicas": {"Deployment/shop/web-app": 2}}
        # the applied objects come back through the informer like any other object
        await wait_until(lambda: _in_inventory(hub, "prod-2", "web-app"))
        matching = await hub.get("/workloads/web/clusters")
        assert matching["matching"] == ["prod-1", "prod-2"]


async def _in_inventory(hub: LiveHub, cluster: str, name: str) -> bool:
    page = await hub.get(
        f"/clusters/{cluster}/resources", kind="Deployment", fieldSelector=f"metadata.name={name}"
    )
    return len(page["items"]) == 1


async def test_updates_roll_out_and_drift_is_repaired(broker: Mosquitto, tmp_path: Path) -> None:
    async with fleet(broker, f"sqlite:///{tmp_path}/h.db") as (hub, agents):
        await hub.http.post("/workloads", json=web_workload())
        await wait_until(
            lambda: reaches(hub, "web", {"prod-1": ("Available", 1), "prod-2": ("Available", 1)})
        )
        updated = await hub.http.put("/workloads/web", json=web_workload(replicas=3))
        assert updated.status_code == 200 and updated.json()["version"] == 2
        await wait_until(
            lambda: reaches(hub, "web", {"prod-1": ("Available", 2), "prod-2": ("Available", 2)})
        )
        sim = sim_of(agents, "prod-1")
        assert sim.get(DEPLOYMENT, "shop", "web-app")["spec"]["replicas"] == 3  # type: ignore[index]
        # someone deletes an applied object on the cluster: ServerSideApply restores it
        sim.delete(CONFIGMAP, "shop", "web-config")
        await wait_until(
            lambda: _exists(sim, CONFIGMAP, "web-config"),
            within=5,
            what="the deleted ConfigMap restored",
        )


async def _exists(sim: SimulatedCluster, kind: KindKey, name: str) -> bool:
    return sim.get(kind, "shop", name) is not None


async def test_relabelled_cluster_loses_the_workload_and_delete_options_hold(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with fleet(broker, f"sqlite:///{tmp_path}/h.db") as (hub, agents):
        await hub.http.post("/workloads", json=web_workload())
        await hub.http.post("/workloads", json=web_workload("keep", deleteOption="Orphan"))
        both = {"prod-1": ("Available", 1), "prod-2": ("Available", 1)}
        await wait_until(lambda: reaches(hub, "web", both))
        await wait_until(lambda: reaches(hub, "keep", both))
        agent: Agent = agents["prod-2"][0]
        agent.relabel({"env": "staging"})
        await wait_until(
            lambda: reaches(hub, "web", {"prod-1": ("Available", 1)}),
            what="prod-2 dropped after relabelling",
        )
        assert not await _exists(sim_of(agents, "prod-2"), DEPLOYMENT, "web-app")
        # Foreground deletes the objects; Orphan leaves them
        assert (await hub.http.delete("/workloads/web")).status_code == 202
        assert (await hub.http.delete("/workloads/keep")).status_code == 202
        await wait_until(lambda: _gone(hub, "web"), what="web forgotten")
        await wait_until(lambda: _gone(hub, "keep"), what="keep forgotten")
        prod1 = sim_of(agents, "prod-1")
        assert not await _exists(prod1, DEPLOYMENT, "web-app")
        assert await _exists(prod1, DEPLOYMENT, "keep-app")


async def _gone(hub: LiveHub, name: str) -> bool:
    return (await hub.http.get(f"/workloads/{name}")).status_code == 404


async def test_an_offline_agent_gets_its_workload_on_reconnect_even_after_a_hub_restart(
    broker: Mosquitto, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path}/h.db"
    agent, sim = sim_agent(
        "prod-9", broker.url, labels={"env": "prod"}, kinds=(DEPLOYMENT, CONFIGMAP)
    )
    async with live_hub(broker_url=broker.url, database_url=db) as hub:
        async with agent:
            await wait_until(lambda: _clusters_known(hub, 1))
        # the agent is gone; the workload is created and the hub restarted before any ack
        assert (await hub.http.post("/workloads", json=web_workload())).status_code == 201
        await wait_until(lambda: reaches(hub, "web", {"prod-9": ("Delivered", 0)}))
    async with live_hub(broker_url=broker.url, database_url=db) as hub:
        again = Agent(
            cluster="prod-9",
            source=sim,
            broker_url=broker.url,
            labels={"env": "prod"},
            heartbeat_s=0.5,
            resync_s=1.0,
        )
        async with again:
            await wait_until(
                lambda: reaches(hub, "web", {"prod-9": ("Available", 1)}),
                within=15,
                what="delivered after reconnecting",
            )
        assert sim.get(DEPLOYMENT, "shop", "web-app") is not None


async def test_bad_workloads_are_refused_with_a_reason(broker: Mosquitto, tmp_path: Path) -> None:
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub:
        good = web_workload()
        no_name = {**good, "manifests": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}]}
        dup = {**good, "manifests": [good["manifests"][1], good["manifests"][1]]}
        huge = {**good, "manifests": [{**good["manifests"][1], "data": {"x": "y" * 300_000}}]}
        config = good["manifests"][1]
        bad_labels = {
            **good,
            "manifests": [{**config, "metadata": {**config["metadata"], "labels": "notadict"}}],
        }
        bad_namespace = {
            **good,
            "manifests": [{**config, "metadata": {"name": "c", "namespace": {}}}],
        }
        bad_selector = {**good, "placement": {"labelSelector": "env in ("}}
        nothing = {**good, "placement": {}}
        for body, fragment in (
            (no_name, "metadata.name"),
            (bad_labels, "ConfigMap shop/web-config: metadata.labels must map strings to strings"),
            (bad_namespace, "ConfigMap c: metadata.namespace must be a string, got dict"),
            (dup, "duplicate object"),
            (huge, "limit"),
            (bad_selector, "labelSelector"),
            (nothing, "needs a labelSelector"),
        ):
            response = await hub.http.post("/workloads", json=body)
            assert response.status_code == 422 and fragment in response.text, response.text
        assert (await hub.http.post("/workloads", json=good)).status_code == 201
        assert (await hub.http.post("/workloads", json=good)).status_code == 409
        refused = await hub.http.put("/workloads/web", json=bad_labels)
        assert refused.status_code == 422 and "metadata.labels" in refused.text
        assert (await hub.get("/workloads/web"))["version"] == 1  # nothing stored
        assert (await hub.http.put("/workloads/other", json=good)).status_code == 400
        assert (await hub.http.delete("/workloads/nope")).status_code == 404
        preview = await hub.http.post("/placements/preview", json={"labelSelector": "env=none"})
        assert preview.json() == {
            "clusters": [],
            "warnings": ["the placement matches no cluster (allowed: it applies when one joins)"],
        }


async def delivery(hub: LiveHub, name: str) -> dict[str, Any]:
    """The workload's one delivery ({} while there is none yet)."""
    clusters = (await hub.get(f"/workloads/{name}"))["clusters"]
    return dict(clusters[0]) if len(clusters) == 1 else {}


async def in_state(hub: LiveHub, name: str, state: str, version: int) -> bool:
    found = await delivery(hub, name)
    return (found.get("state"), found.get("versionApplied")) == (state, version)


def applied_condition(conditions: list[dict[str, Any]]) -> tuple[str, str]:
    (applied,) = (c for c in conditions if c["type"] == "Applied")
    return applied["status"], applied["reason"]


async def test_an_invalid_manifest_fails_on_the_agent_and_the_hub_and_harms_nothing_else(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """The hub refuses such a manifest now, but a workload stored before it did, or a
    message from elsewhere, still reaches the agent: it must fail there, visibly."""
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub:
        agent, sim = sim_agent(
            "prod-1", broker.url, labels={"env": "prod"}, kinds=(DEPLOYMENT, CONFIGMAP)
        )
        async with agent:
            await wait_until(lambda: _clusters_known(hub, 1))
            assert (await hub.http.post("/workloads", json=web_workload())).status_code == 201
            bad = web_workload("bad")
            bad["manifests"][1]["metadata"]["labels"] = "notadict"
            values = {
                "name": "bad",
                "manifests": bad["manifests"],
                "update_strategy": "ServerSideApply",
                "delete_option": "Foreground",
                "feedback_rules": [],
                "placement": bad["placement"],
            }
            await store.create_workload(hub.hub.engine, values, time.time(), hub.hub.writer.lock)
            hub.hub.dispatcher.wake()
            await wait_until(lambda: in_state(hub, "bad", "Failed", 1), what="bad Failed")
            await wait_until(lambda: in_state(hub, "web", "Available", 1), what="web Available")
            message = "ConfigMap shop/bad-config: metadata.labels must map strings to strings"
            on_hub = await delivery(hub, "bad")
            assert message in on_hub["lastError"]
            assert applied_condition(on_hub["conditions"]) == ("False", "InvalidManifest")
            assert agent.workloads is not None
            on_agent = agent.workloads.status("bad")
            assert on_agent is not None and message in on_agent.error
            assert sim.get(DEPLOYMENT, "shop", "bad-app") is None  # nothing of it applied
            # a resend of the same version is answered, not applied: still Failed
            resend = WorkloadApply("bad", 1, bad["manifests"], "ServerSideApply", "Foreground", [])
            await hub.hub.dispatcher._send("prod-1", resend)
            await wait_until(lambda: _acked_again(agent, on_agent.status_hash))
            assert await in_state(hub, "bad", "Failed", 1)
            # the fixed workload is applied as usual
            fixed = await hub.http.put("/workloads/bad", json=web_workload("bad"))
            assert fixed.status_code == 200, fixed.text
            await wait_until(lambda: in_state(hub, "bad", "Available", 2), what="bad fixed")


async def _acked_again(agent: Agent, status_hash: str) -> bool:
    """The agent has sent everything queued, the answer to the resend included."""
    assert agent.workloads is not None
    status = agent.workloads.status("bad")
    return status is not None and status.status_hash == status_hash and not agent._control


class BrokenDeletes(SimulatedCluster):
    """A cluster whose deletes fail with an error the workload runner does not expect."""

    async def delete_object(self, kind: KindKey, namespace: str, name: str) -> bool:
        raise RuntimeError("delete exploded")


async def test_an_apply_that_raises_is_answered_as_failed_and_the_agent_serves_on(
    broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = BrokenDeletes(
        cluster="prod-1", objects=0, churn_per_s=0, seed=1, kinds=[DEPLOYMENT, CONFIGMAP]
    )
    agent = Agent(
        cluster="prod-1",
        source=sim,
        broker_url=broker.url,
        labels={"env": "prod"},
        heartbeat_s=0.5,
        resync_s=1.0,
    )
    db = f"sqlite:///{tmp_path}/h.db"
    async with live_hub(broker_url=broker.url, database_url=db) as hub, agent:
        await wait_until(lambda: _clusters_known(hub, 1))
        assert (await hub.http.post("/workloads", json=web_workload())).status_code == 201
        await wait_until(lambda: in_state(hub, "web", "Available", 1))
        # version 2 drops the ConfigMap: deleting it (Foreground) raises inside the apply
        smaller = web_workload()
        smaller["manifests"] = smaller["manifests"][:1]
        with caplog.at_level(logging.ERROR, logger="app.agent.service"):
            assert (await hub.http.put("/workloads/web", json=smaller)).status_code == 200
            await wait_until(lambda: in_state(hub, "web", "Failed", 2), what="web Failed")
            failed = await delivery(hub, "web")
            assert failed["lastError"] == "applying failed: RuntimeError('delete exploded')"
            assert applied_condition(failed["conditions"]) == ("False", "ApplyFailed")
            # the agent still serves: another workload becomes Available
            assert (
                await hub.http.post("/workloads", json=web_workload("other"))
            ).status_code == 201
            await wait_until(lambda: in_state(hub, "other", "Available", 1), what="other")
        logged = [r for r in caplog.records if "WorkloadApply web failed" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is not None
