"""`GET /stream`: the `data` of each event type, and what each Last-Event-ID gets."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import orjson
import pytest

from app.broker import Mosquitto
from tests.harness import LiveHub, SseReader, live_hub, sim_agent

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
CURRENT = 5
"""The revision of `two_events_hub`: five objects written, one change each."""


async def events(hub: LiveHub, count: int, **request: Any) -> list[dict[str, str]]:
    """The first `count` events of a stream (fewer if the server ends it first)."""
    async with hub.http.stream("GET", "/stream", **request) as response:
        assert response.status_code == 200
        return await SseReader(response).next(count)


async def test_a_stream_without_a_revision_starts_with_a_bookmark_of_the_current_one(
    two_events_hub: LiveHub,
) -> None:
    (bookmark,) = await events(two_events_hub, 1)
    assert bookmark == {"event": "BOOKMARK", "id": str(CURRENT), "data": "{}"}


async def test_change_events_carry_the_cluster_and_the_object(two_events_hub: LiveHub) -> None:
    replayed = await events(two_events_hub, CURRENT, params={"resourceVersion": "0"})
    assert [(e["event"], e["id"]) for e in replayed] == [
        ("ADDED", str(r)) for r in range(1, CURRENT + 1)
    ]
    first = orjson.loads(replayed[0]["data"])
    assert first.keys() == {"cluster", "object"} and first["cluster"] == "c1"
    assert first["object"]["metadata"]["uid"] == "core-x"


@pytest.mark.parametrize(
    "request_",
    [{"headers": {"Last-Event-ID": "99"}}, {"params": {"resourceVersion": "99"}}],
    ids=["Last-Event-ID", "resourceVersion"],
)
async def test_a_revision_from_the_future_gets_reset_to_the_current_one_and_the_end(
    two_events_hub: LiveHub, request_: dict[str, Any]
) -> None:
    got = await events(two_events_hub, 2, **request_)
    assert got == [{"event": "RESET", "data": orjson.dumps({"resourceVersion": "5"}).decode()}]


@pytest.mark.parametrize(
    "request_",
    [
        *({"headers": {"Last-Event-ID": r}} for r in ("abc", "1.5", "-1", "0x10")),
        {"params": {"resourceVersion": "\u0663"}},  # a digit, but not an ASCII one
    ],
    ids=["abc", "1.5", "-1", "0x10", "non-ASCII digit"],
)
async def test_a_last_event_id_that_is_not_a_revision_is_refused(
    two_events_hub: LiveHub, request_: dict[str, Any]
) -> None:
    response = await two_events_hub.http.get("/stream", **request_)
    assert response.status_code == 400
    assert "must be a revision" in response.json()["detail"]


async def test_last_event_id_wins_over_the_resource_version_parameter(
    two_events_hub: LiveHub,
) -> None:
    request = {"headers": {"Last-Event-ID": "3"}, "params": {"resourceVersion": "99"}}
    got = await events(two_events_hub, 2, **request)
    assert [e["id"] for e in got] == ["4", "5"]


async def test_a_cluster_event_gives_last_seen_as_rest_does(
    broker: Mosquitto, database_url: str
) -> None:
    async with live_hub(broker_url=broker.url, database_url=database_url) as hub:
        params = {"cluster": "dev-1", "kind": "NoSuchKind"}  # cluster events only
        async with hub.http.stream("GET", "/stream", params=params) as response:
            reader = SseReader(response)
            await reader.next(1)  # the BOOKMARK: subscribed before the agent says hello
            agent, _sim = sim_agent("dev-1", broker.url)
            async with agent:
                (cluster,) = await reader.next(1)
                rest = await hub.get("/clusters/dev-1")
    assert cluster["event"] == "CLUSTER" and "id" not in cluster
    data = orjson.loads(cluster["data"])
    assert data.keys() == {"cluster", "online", "lastSeen"}
    assert data["cluster"] == "dev-1" and data["online"] is True
    assert ISO_UTC.match(data["lastSeen"]) and ISO_UTC.match(rest["lastSeen"])
    seen = datetime.fromisoformat(data["lastSeen"].replace("Z", "+00:00")).timestamp()
    assert abs(seen - time.time()) < 30
