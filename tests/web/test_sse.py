"""`GET /stream`: the `data` of each event type, and what each Last-Event-ID gets."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

import orjson

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
