"""The dashboard at 1,000 clusters in Chromium: the overview and the workload pages stay
small, page, search, filter and sort on the server, and change live.

The stack is the usual one (a broker, a hub, three sim agents: dev-1, prod-1, prod-2) over
a database that already holds 1,000 simulated clusters (`tests/fleet_rows.py`: written
through the store before the hub starts; every 50th offline) and a workload `fleet-web`
placed on all of them, part way through its rollout.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from app.broker import Mosquitto
from app.store.db import create_engine
from app.store.migrate import upgrade
from tests.browser.conftest import Stack, sign_in
from tests.fleet_rows import SimFleet, write_fleet, write_rollout
from tests.harness import ADMIN_TOKEN, AUTH

FLEET = SimFleet(clusters=1_000, objects=10, offline_every=50)
REAL = 3
"""dev-1, prod-1 and prod-2: real agents beside the simulated fleet."""
PAGE_LIMIT_BYTES = 300_000
DOCS = Path(__file__).resolve().parents[2] / "docs"


def docs_shot(page: Page, name: str) -> None:
    """The documentation's screenshots, refreshed when TI_DOCS_SCREENSHOTS is set (so a
    test run leaves the work tree alone)."""
    if os.environ.get("TI_DOCS_SCREENSHOTS"):
        page.screenshot(path=DOCS / name, full_page=False)


def _fill(path: Path) -> None:
    """Migrate and write the simulated fleet and its rollout (in a thread of its own: the
    sync Playwright keeps this thread's event loop marked running)."""
    url = f"sqlite:///{path}"
    upgrade(url)

    async def fill() -> None:
        engine = create_engine(url)
        await write_fleet(engine, FLEET)
        names = [FLEET.name(i) for i in range(FLEET.clusters)]
        await write_rollout(engine, "fleet-web", names, {"labelSelector": "fleet=sim"})
        await engine.dispose()

    asyncio.run(fill())


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir = tmp_path_factory.mktemp("fleet-stack")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_fill, log_dir / "hub.db").result()
    with Mosquitto(data_dir=log_dir / "mosquitto") as broker:
        running = Stack(log_dir=log_dir, broker=broker)
        try:
            running.start()
            yield running
        finally:
            running.stop()


@pytest.fixture
def fleet_page(anonymous_page: Page, fleet_stack: Stack) -> Page:
    sign_in(anonymous_page, fleet_stack, ADMIN_TOKEN)
    return anonymous_page


def rows(page: Page) -> list[str]:
    return page.locator("#fleet-rows tr[data-cluster]").evaluate_all(
        "rows => rows.map(r => r.dataset.cluster)"
    )


def test_the_overview_of_a_thousand_clusters_loads_small_and_pages(
    fleet_page: Page, fleet_stack: Stack, shots: Path, console_errors: list[str]
) -> None:
    page = fleet_page
    response = page.goto(fleet_stack.base_url + "/")
    assert response is not None and len(response.body()) < PAGE_LIMIT_BYTES
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(50)
    expect(page.locator('[data-total="clusters"]')).to_have_text(f"{FLEET.clusters + REAL:,}")
    expect(page.locator('[data-total="offline"]')).to_have_text("20")
    first = rows(page)
    assert first[:20] == [FLEET.name(i) for i in range(49, 1000, 50)]  # problems first
    assert first[20:23] == ["dev-1", "prod-1", "prod-2"]
    # the rate sparklines are drawn from the live pulse
    expect(page.locator('tr[data-cluster="prod-1"] .spark polyline')).to_have_attribute(
        "points", re.compile(r"\d")
    )
    page.locator("a[rel=next]").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(50)
    assert not set(rows(page)) & set(first)
    big = page.goto(fleet_stack.base_url + "/?size=200")
    assert big is not None and len(big.body()) < PAGE_LIMIT_BYTES
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(200)
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    # last: a screenshot leaves an empty style attribute that htmx's next swap would copy
    page.goto(fleet_stack.base_url + "/")
    expect(page.locator('tr[data-cluster="prod-1"] .spark polyline')).to_have_attribute(
        "points", re.compile(r"\d")
    )
    page.screenshot(path=shots / "fleet-overview.png", full_page=False)
    docs_shot(page, "dashboard-fleet.png")


def test_search_label_filter_state_and_sort_are_answered_by_the_hub(
    fleet_page: Page, fleet_stack: Stack
) -> None:
    page = fleet_page
    page.goto(fleet_stack.base_url + "/")
    page.evaluate("window.__stillHere = true")
    page.get_by_label("Search clusters").fill("sim-0012")
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(10)
    expect(page).to_have_url(re.compile(r"q=sim-0012"))
    page.get_by_label("Search clusters").fill("")
    page.get_by_label("Clusters matching labels").fill("env=prod")
    page.get_by_label("Clusters matching labels").press("Enter")
    expect(page.locator('[data-total="clusters"]')).to_have_text("336")  # 334 + prod-1, -2
    page.get_by_label("Show").select_option("offline")
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(7)
    assert all(int(name[4:]) % 3 == 0 for name in rows(page))
    assert page.evaluate("window.__stillHere") is True  # all of it without a reload
    page.goto(fleet_stack.base_url + "/?sort=name")
    page.locator("thead").get_by_role("link", name="Objects").click()
    expect(page.locator('th[aria-sort="descending"]')).to_contain_text("Objects")
    assert set(rows(page)[:3]) == {"dev-1", "prod-1", "prod-2"}  # 60 objects to the sims' 10


def test_a_cluster_going_offline_moves_to_the_top_live(
    fleet_page: Page, fleet_stack: Stack, shots: Path
) -> None:
    page = fleet_page
    page.goto(fleet_stack.base_url + "/")
    row = page.locator('tr[data-cluster="prod-2"]')
    expect(row.locator("[data-field=state]")).to_have_text("online")
    page.evaluate("window.__stillHere = true")
    try:
        fleet_stack.kill_agent("prod-2", wait=False)
        expect(row.locator("[data-field=state]")).to_have_text("offline", timeout=15_000)
        expect(page.locator('[data-total="offline"]')).to_have_text("21")
        # problems first: offline clusters by name, and prod-2 sorts before every sim-...
        expect(page.locator("#fleet-rows tr[data-cluster]").first).to_have_attribute(
            "data-cluster", "prod-2"
        )
        assert page.evaluate("window.__stillHere") is True
        page.screenshot(path=shots / "fleet-offline.png", full_page=False)
    finally:
        fleet_stack.start_agent("prod-2")
    expect(row.locator("[data-field=state]")).to_have_text("online", timeout=15_000)


def test_the_workloads_list_shows_progress(
    fleet_page: Page, fleet_stack: Stack, shots: Path
) -> None:
    page = fleet_page
    response = page.goto(fleet_stack.base_url + "/ui/workloads")
    assert response is not None and len(response.body()) < PAGE_LIMIT_BYTES
    row = page.locator('tr[data-workload="fleet-web"]')
    expect(row.locator('a[data-state="Available"]')).to_have_text("600 Available")
    expect(row.locator("svg.bar rect")).not_to_have_count(0)
    expect(page.locator("table.matrix")).to_have_count(0)  # 1,003 clusters: no matrix
    page.screenshot(path=shots / "fleet-workloads.png", full_page=False)
    docs_shot(page, "dashboard-workloads.png")


def test_a_workloads_page_pages_and_filters_its_clusters(
    fleet_page: Page, fleet_stack: Stack, shots: Path
) -> None:
    page = fleet_page
    response = page.goto(fleet_stack.base_url + "/ui/workloads/fleet-web")
    assert response is not None and len(response.body()) < PAGE_LIMIT_BYTES
    table = page.locator("table.deliveries tbody tr[data-cluster]")
    expect(table).to_have_count(50)
    expect(table.first.locator(".state")).to_have_text("Failed")  # problems first
    first = table.first.get_attribute("data-cluster")
    page.locator("a[rel=next]").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    expect(table).to_have_count(50)
    assert table.first.get_attribute("data-cluster") != first
    page.get_by_label("State").select_option("Available")
    expect(page.locator("nav.pager")).to_contain_text("of 600 clusters")
    states = page.locator("table.deliveries tbody .state").all_inner_texts()
    assert set(states) == {"Available"} and len(states) == 50
    page.get_by_label("Cluster name").fill("sim-0000")
    expect(table).to_have_count(6)  # sim-00000..09 that are Available: 0-5
    page.goto(fleet_stack.base_url + "/ui/workloads/fleet-web")
    expect(table).to_have_count(50)
    page.screenshot(path=shots / "fleet-workload.png", full_page=False)
    docs_shot(page, "dashboard-workload.png")


def test_a_workloads_page_follows_its_rollout_live(
    fleet_page: Page, fleet_stack: Stack, console_errors: list[str]
) -> None:
    page = fleet_page
    made = httpx.post(
        f"{fleet_stack.base_url}/workloads",
        json={
            "name": "live-web",
            "manifests": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "live-web", "namespace": "shop"},
                    "data": {"a": "b"},
                }
            ],
            "placement": {"clusters": ["prod-1", "prod-2"]},
        },
        headers=AUTH,
        timeout=10,
    )
    assert made.status_code == 201, made.text
    page.goto(fleet_stack.base_url + "/ui/workloads/live-web")
    page.evaluate("window.__stillHere = true")
    expect(page.locator('a[data-state="Available"]')).to_have_text("2 Available", timeout=20_000)
    expect(page.locator("table.deliveries .state")).to_have_text(["Available", "Available"])
    assert page.evaluate("window.__stillHere") is True
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
