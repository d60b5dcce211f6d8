"""The JSON API on kinds that collide across API groups (`v1` and `events.k8s.io/v1` Event)."""

from __future__ import annotations

import pytest

from tests.harness import LiveHub

X = "/clusters/c1/resources/{}/default/x"


async def test_a_bare_kind_naming_two_api_versions_answers_409_naming_them(
    two_events_hub: LiveHub,
) -> None:
    response = await two_events_hub.http.get(X.format("Event"))
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "Event default/x exists as v1 and events.k8s.io/v1; ask for Event. or Event.events.k8s.io"
    )


@pytest.mark.parametrize(
    ("kind", "params", "uid"),
    [
        ("Event.events.k8s.io", {}, "grp-x"),
        ("Event.", {}, "core-x"),
        ("Event", {"apiVersion": "v1"}, "core-x"),
        ("Event", {"apiVersion": "events.k8s.io/v1"}, "grp-x"),
        ("Event.events.k8s.io", {"apiVersion": "events.k8s.io/v1"}, "grp-x"),
    ],
)
async def test_a_group_or_an_api_version_picks_one_object(
    two_events_hub: LiveHub, kind: str, params: dict[str, str], uid: str
) -> None:
    body = await two_events_hub.get(X.format(kind), **params)
    assert body["metadata"]["uid"] == uid


async def test_a_bare_kind_still_finds_an_object_only_one_api_version_has(
    two_events_hub: LiveHub,
) -> None:
    body = await two_events_hub.get("/clusters/c1/resources/Event/default/y")
    assert body["metadata"]["uid"] == "core-y"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (X.format("Event.apps"), {}, 404),
        (X.format("Event.events.k8s.io"), {"apiVersion": "v1"}, 400),
        (X.format(".events.k8s.io"), {}, 400),
        ("/resources", {"kind": "Event.", "apiVersion": "apps/v1"}, 400),
    ],
)
async def test_a_group_that_matches_nothing_or_contradicts_the_api_version_is_refused(
    two_events_hub: LiveHub, path: str, params: dict[str, str], status: int
) -> None:
    response = await two_events_hub.http.get(path, params=params)
    assert response.status_code == status and response.json()["detail"]


async def test_counts_key_colliding_kinds_by_group_per_cluster(two_events_hub: LiveHub) -> None:
    clusters = {c["name"]: c for c in (await two_events_hub.get("/clusters"))["items"]}
    assert clusters["c1"]["counts"] == {"Event": 2, "Event.events.k8s.io": 1, "Pod": 1}
    assert clusters["c2"]["counts"] == {"Event": 1}
    one = await two_events_hub.get("/clusters/c1")
    assert one["counts"] == clusters["c1"]["counts"]


@pytest.mark.parametrize(
    ("kind", "uids"),
    [
        ("Event", {"core-x", "core-y", "grp-x", "grp-z"}),
        ("Event.", {"core-x", "core-y"}),
        ("Event.events.k8s.io", {"grp-x", "grp-z"}),
    ],
)
async def test_the_kind_filter_of_lists_takes_a_group_too(
    two_events_hub: LiveHub, kind: str, uids: set[str]
) -> None:
    page = await two_events_hub.get("/resources", kind=kind)
    assert {i["metadata"]["uid"] for i in page["items"]} == uids
