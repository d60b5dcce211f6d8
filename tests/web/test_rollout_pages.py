"""Workload pages at fleet size, through a live hub: the list shows progress per workload,
a workload's page counts its deliveries and pages through its clusters, live, bounded and
scoped."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.broker import Mosquitto
from app.store.db import create_engine
from app.store.migrate import upgrade
from app.transport.messages import WorkloadStatus
from app.web.live import SharedRenders
from tests.fleet_rows import SimFleet, spread, write_fleet, write_rollout
from tests.harness import LiveHub, SseReader, live_hub

FLEET = SimFleet(clusters=300, objects=0, offline_every=0)
ROW = re.compile(r'<tr data-cluster="([^"]+)"')
STATE = re.compile(r'<td><span class="state s-([a-z]+)">')


@pytest.fixture(scope="module")
def rollout_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """300 clusters; `web` placed on all of them (`spread`: 180 Available, ...), `api` on
    the first 20 (all Available), `dev-web` written by an env=dev operator."""
    path = tmp_path_factory.mktemp("rollout") / "rollout.db"
    upgrade(f"sqlite:///{path}")
    names = [FLEET.name(i) for i in range(FLEET.clusters)]

    async def fill() -> None:
        engine = create_engine(f"sqlite:///{path}")
        await write_fleet(engine, FLEET)
        await write_rollout(engine, "web", names, {"labelSelector": "fleet=sim"})
        await write_rollout(
            engine, "api", names[:20], {"clusters": names[:20]}, lambda _i: "Available"
        )
        dev = [n for i, n in enumerate(names) if FLEET.labels(i)["env"] == "dev"]
        await write_rollout(engine, "dev-web", dev, {"labelSelector": "env=dev"}, scope="env=dev")
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await engine.dispose()

    asyncio.run(fill())
    yield path


@pytest.fixture
async def hub(rollout_db: Path, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[LiveHub]:
    path = tmp_path / "hub.db"
    shutil.copy(rollout_db, path)
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{path}") as live:
        yield live


async def get(hub: LiveHub, path: str, status: int = 200, **params: Any) -> str:
    response = await hub.http.get(path, params=params)
    assert response.status_code == status, response.text[:300]
    return response.text


async def test_the_list_shows_each_workloads_progress_not_a_column_per_cluster(
    hub: LiveHub,
) -> None:
    html = await get(hub, "/ui/workloads")
    web = html[html.index('data-workload="web"') :].split("</tr>")[0]
    assert "180 Available" in web and "30 Applied" in web and "15 Failed" in web
    assert '<rect class="s-available" x="0.0" width="600.0"' in web  # 180 of 300
    counts = {state: int(n) for n, state in re.findall(r">(\d+) (\w+)</a>", web)}
    assert counts.get("Pending", 0) + counts["Delivered"] == 60  # the dispatcher sends some
    assert "20 Available" in html.split('data-workload="api"')[1].split("</tr>")[0]
    assert 'table class="matrix"' not in html  # 300 clusters: no matrix
    assert len(html.encode()) < 50_000
    async with hub.http.stream("GET", "/ui/stream/workloads") as response:
        (event,) = await SseReader(response).next(1)
    assert event["event"] == "workloads" and "180 Available" in event["data"]


async def test_a_workloads_page_counts_and_pages_through_its_clusters(hub: LiveHub) -> None:
    first = await get(hub, "/ui/workloads/web")
    assert len(ROW.findall(first)) == 50 and "page 1 of 6" in first
    assert STATE.findall(first)[:30] == ["failed"] * 15 + ["degraded"] * 15
    assert '<a class="state s-available" href="/ui/workloads/web?state=Available"' in first
    available = await get(hub, "/ui/workloads/web", state="Available", page=2)
    assert set(STATE.findall(available)) == {"available"} and "51\u2013100 of" in available
    # pages partition the list (of a state that holds still: the dispatcher moves Pending
    # deliveries to Delivered meanwhile, and an offset then shifts, as it would for people)
    pages = [await get(hub, "/ui/workloads/web", state="Available", page=p) for p in (1, 2, 3, 4)]
    clusters = [c for page in pages for c in ROW.findall(page)]
    assert sorted(clusters) == [FLEET.name(i) for i in range(300) if spread(i) == "Available"]
    named = ROW.findall(await get(hub, "/ui/workloads/web", q="SIM-0001"))
    assert sorted(named) == [FLEET.name(i) for i in range(10, 20)]
    prod = await get(hub, "/ui/workloads/web", labelSelector="env=prod", size=200)
    assert "<b>100</b> clusters" in prod
    failed = ROW.findall(await get(hub, "/ui/workloads/web", state="Failed", size=200))
    assert sorted(failed) == [FLEET.name(i) for i in range(300) if spread(i) == "Failed"]
    past = await get(hub, "/ui/workloads/web", state="Failed", page=9)
    assert ROW.findall(past) == failed  # past the end: the last page
    fragment = await hub.http.get(
        "/ui/workloads/web", params={"state": "Failed"}, headers={"HX-Request": "true"}
    )
    assert fragment.text.startswith('<section id="deliveries"') and "<html" not in fragment.text
    assert "/ui/stream/workloads/web?state=Failed" in fragment.text


async def test_the_workload_pages_inputs_are_bounded(hub: LiveHub) -> None:
    for params in ({"size": 500}, {"state": "Gone"}, {"page": 0}, {"q": "x" * 64}):
        assert (await hub.http.get("/ui/workloads/web", params=params)).status_code == 422
        stream = await hub.http.get("/ui/stream/workloads/web", params=params)
        assert stream.status_code == 422
    bad = await get(hub, "/ui/workloads/web", 400, labelSelector="env in (")
    assert "bad selector" in bad
    await get(hub, "/ui/workloads/nope", 404)
    assert (await hub.http.get("/ui/stream/workloads/nope")).status_code == 404
    assert (await hub.http.get("/ui/workloads/" + "x" * 64)).status_code == 422
    assert (await hub.http.get("/ui/stream/workloads/Not_A_Name")).status_code == 422


async def test_the_visible_page_changes_live(hub: LiveHub) -> None:
    params = {"state": "Failed", "size": 200}
    failed = [FLEET.name(i) for i in range(300) if spread(i) == "Failed"]
    async with hub.http.stream("GET", "/ui/stream/workloads/web", params=params) as response:
        reader = SseReader(response)
        (event,) = await reader.next(1)
        assert event["event"] == "deliveries" and ROW.findall(event["data"]) == sorted(failed)
        fixed = WorkloadStatus(
            "web", 1, False, [{"type": "Available", "status": "True"}], {}, "", "x"
        )
        await hub.hub.dispatcher.on_agent_messages([(failed[0], fixed)])
        (event,) = await reader.next(1)
    assert ROW.findall(event["data"]) == sorted(failed)[1:]
    assert "14 Failed" in event["data"] and "181 Available" in event["data"]


async def test_a_scoped_viewer_counts_and_lists_only_its_clusters(hub: LiveHub) -> None:
    token = await hub.token("dev", "viewer", clusters="env=dev")
    async with hub.client(token) as http:
        listing = (await http.get("/ui/workloads")).text
        assert 'data-workload="dev-web"' in listing and 'data-workload="web"' not in listing
        page = (await http.get("/ui/workloads/dev-web", params={"size": 200})).text
        assert "<b>100</b> clusters" in page
        assert all(int(c[4:]) % 3 == 2 for c in ROW.findall(page))  # ENVS[2] is dev
        assert (await http.get("/ui/workloads/web")).status_code == 404
        assert (await http.get("/ui/stream/workloads/web")).status_code == 404


async def test_browsers_on_one_view_share_one_render_per_change() -> None:
    shared, renders = SharedRenders(), []

    async def render() -> str:
        renders.append(1)
        await asyncio.sleep(0.01)
        return f"<p>{len(renders)}</p>"

    pages = await asyncio.gather(*(shared.get(("v",), 1, render) for _ in range(20)))
    assert pages == ["<p>1</p>"] * 20 and len(renders) == 1
    assert await shared.get(("v",), 2, render) == "<p>2</p>"
    assert await shared.get(("other",), 2, render) == "<p>3</p>"
