"""`create_app`: assembles the FastAPI app around one hub service (built in the lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.access.admission import AdmissionPolicy
from app.config import HubSettings
from app.hub.service import HubService
from app.store.access import hub_key
from app.web import (
    access_api,
    access_pages,
    api,
    cluster_admin,
    enrolment,
    fleet_pages,
    health,
    metrics,
    openapi,
    pages,
    rollout_pages,
    signin,
    sse,
    workload_pages,
    workloads,
)
from app.web.auth import AccessConfig, FailureGate, NotAuthenticated
from app.web.guards import HttpGuards, parse_hosts
from app.web.live import RenderCache, SharedRenders, Signal
from app.web.pulse import FleetPulse
from app.web.resilience import unavailable
from app.web.streams import StreamSlots

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


def _dashboard(request: Request) -> bool:
    """A page a person opens (not the API, a stream or an htmx fragment)."""
    path = request.url.path
    return (
        (path == "/" or path.startswith("/ui/") or path == "/docs")
        and not path.startswith("/ui/stream/")
        and "HX-Request" not in request.headers
    )


async def not_authenticated(request: Request, exc: Exception) -> Response:
    """401: the sign-in form for a dashboard page, JSON with WWW-Authenticate otherwise."""
    assert isinstance(exc, NotAuthenticated)
    if _dashboard(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return signin.login_page(request, error="", next_path=target, status=401)
    return JSONResponse(
        {"detail": exc.detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, in included routers too (FastAPI includes them lazily)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found += api_routes(router.routes)
    return found


async def http_error(request: Request, exc: Exception) -> Response:
    """As FastAPI answers, but a 405's Allow header lists every method the path has (the
    router names only the first route that matched the path)."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        path = request.url.path
        methods = {
            m
            for route in api_routes(request.app.routes)
            if route.path_regex.match(path)
            for m in route.methods or ()
        }
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(methods))}
    return await http_exception_handler(request, exc)


MAX_GROUP_LABELS = 8


def group_labels(text: str) -> tuple[str, ...]:
    """The overview's grouping label keys from their setting (the first 8)."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    return tuple(dict.fromkeys(keys))[:MAX_GROUP_LABELS]


def create_app(settings: HubSettings) -> FastAPI:
    access = AccessConfig.from_settings(settings)  # a bad setting fails here, at start

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with HubService(settings) as hub, asyncio.TaskGroup() as tasks:
            app.state.hub = hub
            access.csrf_key = await hub_key(hub.engine, "csrf", hub.writer.lock)
            app.state.render_cache = RenderCache[str]()
            app.state.encoded_events = RenderCache[bytes]()
            app.state.pulse = pulse = FleetPulse(
                hub, group_labels=group_labels(settings.dashboard_group_labels)
            )
            app.state.workload_signal = signal = Signal()
            app.state.shared_renders = SharedRenders()
            hub.dispatcher.on_change = signal.bump
            pulse_task = tasks.create_task(pulse.run())
            try:
                yield
            finally:
                pulse_task.cancel()

    app = FastAPI(
        title="Transport Informer",
        version=__version__,
        description="Every cluster's Kubernetes objects, carried over MQTT, stored in SQL. "
        "Every operation but the health checks needs `Authorization: Bearer <token>`.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.access = access
    app.state.templates = pages.build_templates()
    app.state.failures = FailureGate()
    app.state.stream_slots = StreamSlots(
        settings.sse_max_streams, settings.sse_max_streams_per_principal
    )
    app.state.admission = AdmissionPolicy.from_settings(
        settings.admission_admin_kinds, settings.admission_protected_namespaces
    )
    app.openapi = lambda: openapi.openapi_document(app)  # type: ignore[method-assign]
    app.add_exception_handler(DBAPIError, unavailable)
    app.add_exception_handler(NotAuthenticated, not_authenticated)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(
        HttpGuards,
        allowed_hosts=parse_hosts(settings.allowed_hosts),
        max_body_bytes=settings.max_body_bytes,
    )
    for module in (
        health,
        signin,
        openapi,
        enrolment,  # agents: authenticated by their join token or client certificate
        cluster_admin,  # admin only
        api,
        sse,
        metrics,
        workloads,
        access_api,
        workload_pages,
        rollout_pages,
        access_pages,
        fleet_pages,
        pages,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
