"""The browser-test infrastructure works: Chromium reaches the real hub of the stack."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import Stack


def test_chromium_sees_the_clusters_of_the_live_hub(page: Page, stack: Stack, shots: Path) -> None:
    response = page.goto(f"{stack.base_url}/clusters")
    assert response is not None and response.ok
    body = page.locator("body")
    for name in ("dev-1", "prod-1", "prod-2"):
        expect(body).to_contain_text(name)
    page.screenshot(path=shots / "smoke-clusters-json.png", full_page=True)
    assert (shots / "smoke-clusters-json.png").stat().st_size > 0


def test_the_stack_can_kill_an_agent_and_bring_it_back(stack: Stack) -> None:
    stack.kill_agent("prod-2")  # SIGKILL; returns once the hub shows prod-2 offline
    assert stack.online("prod-1") is True
    stack.start_agent("prod-2")  # same labels and seed; returns once it is online again
    assert stack.all_online()
