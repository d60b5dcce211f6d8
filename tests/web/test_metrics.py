"""`GET /metrics`: the hub's counters in Prometheus' text format."""

from __future__ import annotations

from pathlib import Path

from app.broker import Mosquitto
from app.transport import cloudevents, topics
from app.transport.mqtt import LinkOptions, MqttLink
from tests.conftest import wait_until
from tests.harness import LiveHub, live_hub

HEARTBEAT = "io.transport-informer.v1.clusters.status.heartbeat"


async def metrics(hub: LiveHub) -> list[str]:
    response = await hub.http.get("/metrics")
    assert response.status_code == 200
    return response.text.splitlines()


async def test_rejected_messages_have_help_and_type_but_no_sample_until_one_is_rejected(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub:
        lines = await metrics(hub)
    assert "# HELP ti_ingest_rejected_total Agent messages rejected, by reason." in lines
    assert "# TYPE ti_ingest_rejected_total counter" in lines
    assert [line for line in lines if line.startswith("ti_ingest_rejected_total")] == []


async def test_resync_requests_sent_to_agents_are_counted(
    broker: Mosquitto, tmp_path: Path
) -> None:
    async with live_hub(broker_url=broker.url, database_url=f"sqlite:///{tmp_path}/h.db") as hub:
        lines = await metrics(hub)
        assert "# TYPE ti_ingest_relist_requests_total counter" in lines
        assert "ti_ingest_relist_requests_total 0" in lines
        # a heartbeat from a cluster the database does not know: the hub asks for everything
        heartbeat = cloudevents.CloudEvent(HEARTBEAT, "agent/ghost", "ghost", {})
        options = LinkOptions(url=broker.url, client_id="ti-agent-ghost")
        async with MqttLink(options) as link:
            await link.publish(
                topics.agent_events(topics.DEFAULT_SOURCE, "ghost"), cloudevents.encode(heartbeat)
            )
            await link.flush()
        await wait_until(
            lambda: _has(hub, "ti_ingest_relist_requests_total 1"), what="one relist counted"
        )


async def _has(hub: LiveHub, line: str) -> bool:
    return line in await metrics(hub)
