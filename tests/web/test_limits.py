"""Input that used to cost the hub memory, time or a 500 answers 4xx, quickly; streams are
bounded per principal and in total."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

from app.web.streams import StreamSlots
from tests.harness import LiveHub


def rss_bytes() -> int:
    """This process's resident memory (the hub runs in it)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def alias_bomb(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    previous = "a"
    for name in "bcdefghijklm"[: levels - 1]:
        text += f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
        previous = name
    return text


async def test_an_alias_bomb_is_refused_quickly_with_bounded_memory(fleet_hub: LiveHub) -> None:
    bomb = alias_bomb(9)  # ~7 GB once expanded
    assert len(bomb) < 600
    before = rss_bytes()
    started = time.perf_counter()
    response = await fleet_hub.http.post(
        "/ui/workloads",
        data={"name": "bomb", "manifests": bomb, "labelSelector": "env=dev"},
    )
    took = time.perf_counter() - started
    assert response.status_code == 422
    assert "expands to more than 100000 nodes" in response.text
    assert took < 1.0, took
    assert rss_bytes() - before < 20 * 1024 * 1024


async def test_deep_or_recursive_yaml_is_refused(fleet_hub: LiveHub) -> None:
    for text, why in (
        ("a: &x [*x]", "cycle"),
        ("[" * 200 + "]" * 200, "nests deeper than 100"),
        ("[" * 5000 + "]" * 5000, "maximum nesting depth"),  # libyaml's own limit
    ):
        response = await fleet_hub.http.post(
            "/ui/workloads", data={"name": "deep", "manifests": text, "labelSelector": "x=y"}
        )
        assert response.status_code == 422 and why in response.text


async def test_a_deeply_nested_json_body_is_a_4xx(fleet_hub: LiveHub) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    response = await fleet_hub.http.post(
        "/workloads", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)


async def test_a_huge_selector_is_refused_fast(fleet_hub: LiveHub) -> None:
    huge = ",".join(f"k{i}=v" for i in range(2000))
    for path in ("/resources", "/stream", "/"):
        started = time.perf_counter()
        response = await fleet_hub.http.get(path, params={"labelSelector": huge})
        assert response.status_code in (400, 422), path
        assert time.perf_counter() - started < 0.5
    many = ",".join(f"k{i}=v" for i in range(40))  # short, but too many terms
    response = await fleet_hub.http.get("/resources", params={"labelSelector": many})
    assert response.status_code == 400 and "terms" in response.json()["detail"]
    values = "k in (" + ",".join(f"v{i}" for i in range(200)) + ")"
    response = await fleet_hub.http.get("/resources", params={"labelSelector": values})
    assert response.status_code == 400


async def test_oversized_integers_are_4xx_not_500(fleet_hub: LiveHub) -> None:
    big = 2**64
    raw = b'{"k": [' + str(big).encode() + b'], "rv": 1, "o": "id"}'
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert (await fleet_hub.http.get("/resources", params={"continue": cursor})).status_code == 400
    tampered = base64.urlsafe_b64encode(b'{"k": [{"x": 1}, 5], "rv": 1, "o": "age"}').decode()
    page = await fleet_hub.http.get(
        "/ui/clusters/dev-1", params={"sort": "age", "continue": tampered}
    )
    assert page.status_code == 400
    wrong_types = base64.urlsafe_b64encode(b'{"k": [5, "a", 7], "rv": 1, "o": "name"}').decode()
    page = await fleet_hub.http.get(
        "/ui/clusters/dev-1", params={"sort": "name", "continue": wrong_types}
    )
    assert page.status_code == 400
    placement = {"labelSelector": "env=dev", "maxClusters": 2**80}
    assert (await fleet_hub.http.post("/placements/preview", json=placement)).status_code == 422
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "shop"},
        "spec": {"replicas": 2**80},
    }
    body = {"name": "big", "manifests": [manifest], "placement": {"labelSelector": "env=dev"}}
    response = await fleet_hub.http.post("/workloads", json=body)
    assert response.status_code == 422 and "cannot be stored" in response.text
    form = {"name": "big", "manifests": "a: 1", "labelSelector": "x=y", "maxClusters": "9" * 30}
    assert (await fleet_hub.http.post("/ui/workloads", data=form)).status_code == 422
    since = {"cluster": "dev-1", "since": str(2**70)}
    assert (await fleet_hub.http.get("/ui/stream/rows", params=since)).status_code == 422


async def test_an_oversized_body_is_413(fleet_hub: LiveHub) -> None:
    huge = b"x" * (1024 * 1024 + 1)
    response = await fleet_hub.http.post(
        "/workloads", content=huge, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b"x" * 100_000

    response = await fleet_hub.http.post(
        "/ui/workloads",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


async def test_streams_beyond_the_limits_get_429_with_retry_after(fleet_hub: LiveHub) -> None:
    assert fleet_hub.app is not None
    slots = fleet_hub.app.state.stream_slots = StreamSlots(total=3, per_principal=2)
    viewer = await fleet_hub.token("v", "viewer")
    async with fleet_hub.client(viewer) as other:
        first = fleet_hub.http.stream("GET", "/stream")
        second = fleet_hub.http.stream("GET", "/stream")
        async with first as a, second as b:
            assert a.status_code == b.status_code == 200
            third = await fleet_hub.http.get("/ui/stream/fleet")
            assert third.status_code == 429 and third.headers["retry-after"] == "5"
            assert "2 streams of bootstrap" in third.json()["detail"]
            async with other.stream("GET", "/stream") as c:
                assert c.status_code == 200
                full = await other.get("/stream")
                assert full.status_code == 429 and "serves 3 streams" in full.json()["detail"]
        for _ in range(250):  # the server notices the closed streams, and frees their slots
            if slots.open == 0:
                break
            await asyncio.sleep(0.02)
        assert slots.open == 0
