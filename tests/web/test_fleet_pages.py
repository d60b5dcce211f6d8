"""The fleet overview at 1,000 clusters through a live hub: paged, searched, filtered,
sorted on the server, bounded in size and input, scoped, and live per view."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.broker import Mosquitto
from app.informer.objects import KindKey
from app.store.db import create_engine
from app.store.migrate import upgrade
from app.transport.messages import MessageType, snapshot_data
from tests.conftest import wait_until
from tests.fleet_rows import SimFleet, write_fleet
from tests.harness import LiveHub, RawAgent, SseReader, live_hub
from tests.objects import pod

FLEET = SimFleet(clusters=1_000, objects=2, offline_every=50)
PAGE_LIMIT_BYTES = 300_000
ROW = re.compile(r'<tr data-cluster="([^"]+)"')


@pytest.fixture(scope="module")
def fleet_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database holding `FLEET`, written once for the module; tests copy it."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.db"
    upgrade(f"sqlite:///{path}")

    async def fill() -> None:
        engine = create_engine(f"sqlite:///{path}")
        await write_fleet(engine, FLEET)
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await engine.dispose()

    asyncio.run(fill())
    yield path


@pytest.fixture
async def hub(fleet_db: Path, broker: Mosquitto, tmp_path: Path) -> AsyncIterator[LiveHub]:
    path = tmp_path / "hub.db"
    shutil.copy(fleet_db, path)
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{path}") as live:
        yield live


async def page(hub: LiveHub, status: int = 200, **params: Any) -> str:
    response = await hub.http.get("/", params=params)
    assert response.status_code == status, response.text[:300]
    return response.text


def rows(html: str) -> list[str]:
    return ROW.findall(html)


async def test_a_thousand_clusters_page_with_problems_first(hub: LiveHub) -> None:
    first = await page(hub)
    offline = [FLEET.name(i) for i in range(49, 1000, 50)]
    assert rows(first)[:20] == offline and len(rows(first)) == 50
    assert rows(first)[20] == FLEET.name(0)
    assert 'data-total="clusters">1,000<' in first and 'data-total="offline">20<' in first
    assert 'data-total="online">980<' in first
    assert ">1\u201350 of " in first and "page 1 of 20" in first
    second = rows(await page(hub, page=2))
    assert second == [FLEET.name(i) for i in range(1000) if i % 50 != 49][30:80]
    last = await page(hub, page=20)
    assert len(rows(last)) == 50 and "page 20 of 20" in last
    assert rows(await page(hub, page=999)) == rows(last)  # past the end: the last page
    everything = [r for p in range(1, 21) for r in rows(await page(hub, page=p))]
    assert sorted(everything) == sorted(FLEET.name(i) for i in range(1000))


async def test_a_page_weighs_the_same_whatever_the_fleet(hub: LiveHub) -> None:
    biggest = await page(hub, size=200)
    assert len(rows(biggest)) == 200
    assert len(biggest.encode()) < PAGE_LIMIT_BYTES
    default = await page(hub)
    assert len(default.encode()) < PAGE_LIMIT_BYTES / 3


async def test_search_labels_state_and_sort_are_answered_by_the_server(hub: LiveHub) -> None:
    assert rows(await page(hub, q="SIM-0012")) == [FLEET.name(i) for i in range(120, 130)]
    prod = await page(hub, labelSelector="env=prod", size=200)
    assert 'data-total="clusters">334<' in prod
    assert all(int(n[4:]) % 3 == 0 for n in rows(prod))
    eu = await page(hub, labelSelector="env=prod,region=eu-west")
    assert 'data-group="region" data-value="eu-west"' in eu
    assert 'data-group="region" data-value="us-east"' not in eu
    offline = rows(await page(hub, show="offline"))
    assert offline == [FLEET.name(i) for i in range(49, 1000, 50)]
    assert rows(await page(hub, sort="name"))[:2] == [FLEET.name(0), FLEET.name(1)]
    assert rows(await page(hub, sort="name", dir="desc"))[0] == FLEET.name(999)
    assert rows(await page(hub, sort="seen", size=10)) == [FLEET.name(i) for i in range(10)]
    # the summary's groups link to the narrowed view
    assert 'href="/?labelSelector=env%3Dprod"' in await page(hub)


async def test_inputs_are_bounded(hub: LiveHub) -> None:
    for params in (
        {"size": 201},
        {"size": 9},
        {"page": 0},
        {"page": 10_001},
        {"sort": "uid"},
        {"show": "everything"},
        {"dir": "up"},
        {"q": "x" * 64},
        {"labelSelector": "a" * 2049},
    ):
        assert (await hub.http.get("/", params=params)).status_code == 422, params
        stream = await hub.http.get("/ui/stream/fleet", params=params)
        assert stream.status_code == 422, params
    bad = await page(hub, 400, labelSelector="env in (")
    assert "bad selector" in bad and len(rows(bad)) == 50  # the unfiltered view
    assert (
        await hub.http.get("/ui/stream/fleet", params={"labelSelector": "env in ("})
    ).status_code == 400


async def test_an_htmx_request_gets_the_table_alone(hub: LiveHub) -> None:
    response = await hub.http.get("/", params={"q": "sim-0001"}, headers={"HX-Request": "true"})
    assert response.text.lstrip().startswith('<div id="fleet"') and "<html" not in response.text
    assert len(rows(response.text)) == 10
    boosted = await hub.http.get("/", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.text


async def first_pulse(hub: LiveHub, http: Any = None, **params: Any) -> dict[str, Any]:
    async with (http or hub.http).stream("GET", "/ui/stream/fleet", params=params) as response:
        assert response.status_code == 200
        (event,) = await SseReader(response).next(1)
    assert event["event"] == "pulse"
    doc: dict[str, Any] = orjson.loads(event["data"])
    return doc


async def test_a_stream_carries_its_page_and_summary_only(hub: LiveHub) -> None:
    doc = await first_pulse(hub, sort="name", size=25, page=3)
    assert [r["name"] for r in doc["rows"]] == [FLEET.name(i) for i in range(50, 75)]
    assert doc["summary"]["clusters"] == 1000 and doc["summary"]["offline"] == 20
    assert doc["total"] == 1000 and doc["pages"] == 40 and doc["page"] == 3
    assert len(orjson.dumps(doc)) < 10_000  # a page, not a thousand clusters


async def test_browsers_showing_one_view_share_its_work(hub: LiveHub) -> None:
    assert hub.app is not None
    pulse = hub.app.state.pulse
    params = [{"sort": "name"}, {"sort": "name"}, {"sort": "name", "page": 2}]
    async with asyncio.TaskGroup() as tasks:
        readers = [tasks.create_task(_hold(hub, p)) for p in params]
        await wait_until(lambda: _clients(pulse, 3), what="three streams")
        assert pulse.views == 2
        for reader in readers:
            reader.cancel()


async def _clients(pulse: Any, n: int) -> bool:
    return bool(pulse.clients == n)


async def _hold(hub: LiveHub, params: dict[str, Any]) -> None:
    async with hub.http.stream("GET", "/ui/stream/fleet", params=params) as response:
        reader = SseReader(response)
        while True:
            await reader.next(1)


async def test_a_cluster_going_offline_and_one_being_listed_show_up_live(
    hub: LiveHub, broker: Mosquitto
) -> None:
    params = {"q": "raw-", "sort": "name"}
    async with (
        RawAgent(broker.url, "raw-1") as agent,
        hub.http.stream("GET", "/ui/stream/fleet", params=params) as response,
    ):
        reader = SseReader(response)
        await agent.hello("v1/Pod")
        doc = await _pulse_until(reader, lambda d: [r["state"] for r in d["rows"]] == ["online"])
        assert doc["summary"]["clusters"] == 1
        chunk = snapshot_data("s1", KindKey("v1", "Pod"), 0, False, 5, [pod("p", 5)])
        await agent.send(MessageType.SNAPSHOT, chunk)
        await _pulse_until(reader, lambda d: d["rows"][0]["state"] == "unsynced")
        listed = await page(hub, show="unsynced")
        assert rows(listed) == ["raw-1"] and 'data-total="unsynced">1<' in listed
        await agent.send(MessageType.OFFLINE, {"reason": "test"})
        doc = await _pulse_until(reader, lambda d: d["rows"][0]["state"] == "offline")
        assert doc["summary"]["offline"] == 1 and doc["summary"]["online"] == 0


async def _pulse_until(reader: SseReader, done: Any, within: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            (event,) = await reader.next(1)
            doc: dict[str, Any] = orjson.loads(event["data"])
            if doc["rows"] and done(doc):
                return doc


async def test_a_scoped_viewer_sees_only_its_clusters(hub: LiveHub) -> None:
    token = await hub.token("dev", "viewer", clusters="env=dev")
    async with hub.client(token) as http:
        html = (await http.get("/", params={"size": 200})).text
        assert 'data-total="clusters">333<' in html
        assert all(int(n[4:]) % 3 == 2 for n in rows(html))  # ENVS[2] is dev
        assert 'data-value="prod"' not in html
        assert rows((await http.get("/", params={"q": FLEET.name(0)})).text) == []
        doc = await first_pulse(hub, http, size=200)
        assert doc["summary"]["clusters"] == 333
        assert all(int(r["name"][4:]) % 3 == 2 for r in doc["rows"])
        assert [g[0] for g in doc["summary"]["groups"]["env"]] == ["dev"]
