"""`GET /metrics`: the hub's counters in Prometheus' text format (no client library needed).

Fleet-wide totals, so they need an unscoped token of any role (a scraper's `viewer`
token: Prometheus' `authorization: credentials_file`), unless `metrics_public` is set.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from app.web.auth import metrics_access
from app.web.deps import HubDep
from app.web.openapi import AUTH_ERRORS

router = APIRouter(dependencies=[Depends(metrics_access)], responses=AUTH_ERRORS)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@router.get("/metrics", tags=["health"], response_class=PlainTextResponse)
async def metrics(hub: HubDep) -> str:
    stats = hub.ingest.stats
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: dict[str, float]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples.items())

    metric("ti_ingest_messages_total", "counter", "Agent messages applied.", {"": stats.messages})
    metric(
        "ti_ingest_events_total",
        "counter",
        "Object events and snapshot items received.",
        {"": stats.events},
    )
    metric("ti_ingest_batches_total", "counter", "Write transactions.", {"": stats.batches})
    metric(
        "ti_ingest_changes_total",
        "counter",
        "Changes committed to the change log.",
        {"": stats.changes},
    )
    metric(
        "ti_ingest_relist_requests_total",
        "counter",
        "Resync requests sent to agents (a broken snapshot, a digest that differed, "
        "a heartbeat from a cluster the database does not know).",
        {"": stats.relists},
    )
    metric(  # no samples until something is rejected: a reason is known only then
        "ti_ingest_rejected_total",
        "counter",
        "Agent messages rejected, by reason.",
        {f'{{reason="{_escape(r)}"}}': n for r, n in sorted(stats.rejected.items())},
    )
    metric(
        "ti_ingest_queued_messages",
        "gauge",
        "Messages waiting for the next batch.",
        {"": hub.ingest.queued},
    )
    metric(
        "ti_ingest_reading_paused",
        "gauge",
        "1 while the hub does not read from the broker (its queue is at its bound).",
        {"": 1 if hub.ingest.paused else 0},
    )
    metric(
        "ti_ingest_oldest_queued_seconds",
        "gauge",
        "Age of the oldest message waiting for its batch.",
        {"": round(hub.ingest.oldest_queued_s(), 3)},
    )
    metric(
        "ti_ingest_stuck_seconds",
        "gauge",
        "How long messages have waited with no commit (readiness fails past stuck_after_s).",
        {"": round(hub.ingest.stuck_for(), 3)},
    )
    metric(
        "ti_ingest_writes_failing",
        "gauge",
        "1 while writes fail for the database being unavailable.",
        {"": 1 if hub.ingest.health.failing_since is not None else 0},
    )
    metric(
        "ti_ingest_write_failures_total",
        "counter",
        "Batch writes that failed for the database being unavailable (retried).",
        {"": hub.ingest.health.write_failures},
    )
    metric(
        "ti_ingest_over_quota_clusters",
        "gauge",
        "Clusters whose messages are being dropped for exceeding their quota.",
        {"": len(hub.ingest.quota.over())},
    )
    metric(
        "ti_ingest_relists_suppressed_total",
        "counter",
        "Relist requests not sent because the same one was sent too recently.",
        {"": hub.ingest.relists.suppressed},
    )
    metric(
        "ti_ingest_dead_letters_dropped_total",
        "counter",
        "Refusals counted but not recorded in the rejections table (rate limit).",
        {"": hub.ingest.dead_letters.dropped},
    )
    metric(
        "ti_feed_subscribers",
        "gauge",
        "Change-feed subscriptions: change streams, cluster views, live feeds.",
        {"": hub.feed.subscribers},
    )
    metric(
        "ti_revision",
        "gauge",
        "Latest revision published to streams.",
        {"": hub.feed.latest_revision},
    )
    metric(
        "ti_broker_connected",
        "gauge",
        "1 if the hub is connected to the MQTT broker.",
        {"": 1 if hub.link.connected else 0},
    )
    return "\n".join(lines) + "\n"
