"""`create_app`: assembles the FastAPI app around one hub service (built in the lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.config import HubSettings
from app.hub.service import HubService
from app.web import api, metrics, sse


def create_app(settings: HubSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with HubService(settings) as hub:
            app.state.hub = hub
            yield

    app = FastAPI(
        title="Transport Informer",
        version=__version__,
        description="Every cluster's Kubernetes objects, carried over MQTT, stored in SQL.",
        lifespan=lifespan,
    )
    app.include_router(api.router)
    app.include_router(sse.router)
    app.include_router(metrics.router)
    return app
