"""`create_app`: assembles the FastAPI app around one hub service (built in the lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError

from app import __version__
from app.config import HubSettings
from app.hub.service import HubService
from app.web import (
    api,
    cluster_admin,
    enrolment,
    metrics,
    pages,
    sse,
    workload_pages,
    workloads,
)
from app.web.live import FleetPulse, RenderCache, Signal
from app.web.resilience import unavailable

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def create_app(settings: HubSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with HubService(settings) as hub, asyncio.TaskGroup() as tasks:
            app.state.hub = hub
            app.state.templates = pages.build_templates()
            app.state.render_cache = RenderCache()
            app.state.pulse = pulse = FleetPulse(hub)
            app.state.workload_signal = signal = Signal()
            hub.dispatcher.on_change = lambda _names: signal.bump()
            pulse_task = tasks.create_task(pulse.run())
            try:
                yield
            finally:
                pulse_task.cancel()

    app = FastAPI(
        title="Transport Informer",
        version=__version__,
        description="Every cluster's Kubernetes objects, carried over MQTT, stored in SQL.",
        lifespan=lifespan,
    )
    app.add_exception_handler(DBAPIError, unavailable)
    app.include_router(api.router)
    app.include_router(enrolment.router)  # authenticated by join token / client certificate
    app.include_router(cluster_admin.router)  # admin only
    app.include_router(sse.router)
    app.include_router(metrics.router)
    app.include_router(workloads.router)
    app.include_router(workload_pages.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
