"""The dashboard in a real browser (Debian's Chromium) against a real hub, broker and agents."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Stack
from tests.harness import AUTH


def test_overview_lists_every_cluster_live(page: Page, stack: Stack, shots: Path) -> None:
    page.goto(stack.base_url + "/")
    for name in ("dev-1", "prod-1", "prod-2"):
        expect(page.locator(f'tr[data-cluster="{name}"] [data-field=state]')).to_have_text("online")
    expect(page.locator('[data-total="clusters"]')).to_have_text("3")
    # the change-rate sparkline is drawn from the live pulse
    expect(page.locator('tr[data-cluster="prod-1"] .spark polyline')).to_have_attribute(
        "points", re.compile(r"\d")
    )
    page.screenshot(path=shots / "overview.png", full_page=True)


def test_filtering_the_fleet_by_label(page: Page, stack: Stack) -> None:
    page.goto(stack.base_url + "/")
    page.get_by_label("Clusters matching labels").fill("env=prod")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#fleet-rows tr[data-cluster]")).to_have_count(2)
    expect(page.locator('tr[data-cluster="dev-1"]')).to_have_count(0)


def test_cluster_view_changes_live_without_reload(page: Page, stack: Stack, shots: Path) -> None:
    page.goto(stack.base_url + "/ui/clusters/prod-1")
    expect(page.locator("#rows tr")).not_to_have_count(0)
    page.evaluate("window.__stillHere = true")
    # the sim churns 2 changes/s; one of them reaches this open page as a live row
    expect(page.locator("#rows tr[data-op]").first).to_be_attached(timeout=5000)
    assert page.evaluate("window.__stillHere") is True  # no reload happened
    page.screenshot(path=shots / "cluster.png", full_page=False)


def test_a_filter_narrows_the_table(page: Page, stack: Stack) -> None:
    page.goto(stack.base_url + "/ui/clusters/prod-1")
    nodes = stack.get("/clusters/prod-1")["counts"]["Node"]
    page.locator("select[name=kind]").select_option("Node")
    expect(page.locator("#rows tr")).to_have_count(nodes)
    expect(page).to_have_url(re.compile(r"kind=Node"))
    for kind in page.locator("#rows tr td:nth-child(2)").all_inner_texts():
        assert kind == "Node"


def test_object_view_shows_yaml(page: Page, stack: Stack, shots: Path) -> None:
    page.goto(stack.base_url + "/ui/clusters/prod-1?kind=Deployment")
    page.locator("#rows tr th a").first.click()
    expect(page.locator("pre.yaml")).to_contain_text("apiVersion: apps/v1")
    expect(page.locator("h2", has_text="History")).to_be_visible()
    page.screenshot(path=shots / "object.png", full_page=False)


def test_live_feed_streams_and_pauses(page: Page, stack: Stack, shots: Path) -> None:
    page.goto(stack.base_url + "/ui/events")
    expect(page.locator("#feed li").first).to_be_attached(timeout=5000)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#pause")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#skipped")).to_contain_text("not shown while paused", timeout=5000)
    page.screenshot(path=shots / "events.png", full_page=False)


def test_a_killed_agent_turns_its_row_offline(page: Page, stack: Stack, shots: Path) -> None:
    page.goto(stack.base_url + "/?sort=name")
    row = page.locator('tr[data-cluster="prod-2"]')
    expect(row.locator("[data-field=state]")).to_have_text("online")
    try:
        stack.kill_agent("prod-2", wait=False)
        expect(row.locator("[data-field=state]")).to_have_text("offline", timeout=10000)
        expect(row).to_have_class(re.compile(r"\bst-offline\b"))
        page.screenshot(path=shots / "overview-offline.png", full_page=False)
    finally:
        stack.start_agent("prod-2")
    expect(row.locator("[data-field=state]")).to_have_text("online", timeout=10000)


def test_a_workload_created_in_the_form_rolls_out_green(
    page: Page, stack: Stack, shots: Path
) -> None:
    page.goto(stack.base_url + "/ui/workloads/new")
    page.locator("input[name=name]").fill("shop")
    page.locator("input[name=labelSelector]").fill("env=prod")
    expect(page.locator("#preview")).to_contain_text("2 clusters match")
    page.screenshot(path=shots / "workload-form.png", full_page=True)
    page.get_by_role("button", name="Create and deploy").click()
    expect(page).to_have_url(re.compile(r"/ui/workloads/shop$"))
    page.goto(stack.base_url + "/ui/workloads")
    row = page.locator("table.matrix tr", has_text="shop")
    expect(row.locator(".s-available")).to_have_count(2, timeout=15000)
    page.screenshot(path=shots / "workloads.png", full_page=False)


def test_sign_in_create_a_workload_see_it_audited_sign_out(
    anonymous_page: Page, stack: Stack, console_errors: list[str], shots: Path
) -> None:
    page = anonymous_page
    made = httpx.post(
        f"{stack.base_url}/tokens",
        json={"name": "erin", "role": "admin"},
        headers=AUTH,
        timeout=5,
    )
    token = made.json()["token"]
    page.goto(stack.base_url + "/ui/workloads")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()  # 401: the form
    page.screenshot(path=shots / "sign-in.png", full_page=False)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/workloads$"))
    expect(page.locator(".who")).to_contain_text("erin")

    page.goto(stack.base_url + "/ui/workloads/new")
    page.locator("input[name=name]").fill("audited")
    page.locator("input[name=labelSelector]").fill("env=dev")
    expect(page.locator("#preview")).to_contain_text("1 cluster matches")  # htmx, CSRF header
    page.get_by_role("button", name="Create and deploy").click()
    expect(page).to_have_url(re.compile(r"/ui/workloads/audited$"))

    page.get_by_role("link", name="Audit").click()
    entry = page.locator("table.audit tbody tr", has_text="workload.create").first
    expect(entry).to_contain_text("audited")
    expect(entry).to_contain_text("erin")
    page.screenshot(path=shots / "audit.png", full_page=False)

    page.on("dialog", lambda dialog: dialog.accept())  # the delete form asks first
    page.goto(stack.base_url + "/ui/workloads/audited")
    page.get_by_role("button", name="Delete workload").click()
    expect(page).to_have_url(re.compile(r"/ui/workloads$"))

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    assert page.goto(stack.base_url + "/ui/workloads").status == 401
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors


def test_api_docs_render_offline_under_the_csp(
    page: Page, stack: Stack, console_errors: list[str]
) -> None:
    page.goto(stack.base_url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Transport Informer")
    expect(page.locator(".opblock-summary-path", has_text="/workloads").first).to_be_visible()
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
