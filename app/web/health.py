"""Health: liveness, readiness. Open to anyone (orchestrators probe them), and they say
nothing about the inventory."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.web.deps import HubDep

router = APIRouter()


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["health"],
    responses={503: {"description": "Not ready: the same body, with `ready` false"}},
)
async def readyz(hub: HubDep) -> JSONResponse:
    """Ready when the database answers, the broker is connected and ingest is committing:
    not failing to write, and no message waiting longer than `stuck_after_s` without a
    commit. Redis is reported but advisory (ingest and queries work without it)."""
    checks = {
        "database": await hub.database_ok(),
        "broker": hub.link.connected,
        "ingest": hub.ingest_ok(),
    }
    ready = all(checks.values())
    if hub.settings.redis_url:
        checks["redis"] = await hub.registry.ping()
    ingest = hub.ingest
    detail = {
        "queuedMessages": ingest.queued,
        "oldestQueuedSeconds": round(ingest.oldest_queued_s(), 3),
        "stuckSeconds": round(ingest.stuck_for(), 3),
        "writesFailing": ingest.health.failing_since is not None,
        "lastError": ingest.health.last_error or None,
    }
    return JSONResponse(
        {"ready": ready, "checks": checks, "ingest": detail}, status_code=200 if ready else 503
    )
