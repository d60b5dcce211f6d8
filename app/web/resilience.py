"""Reads that survive a database blip: one retry, then 503 with Retry-After, never a hang.

- `RetryingRoute`: a GET whose handler fails because the database connection was lost (a
  PostgreSQL backend terminated, a failover) runs once more on a fresh pooled connection.
- `unavailable`: what is still unavailable after that (or a lock held past the read engine's
  `lock_timeout`) is answered 503 with `Retry-After`, not 500: the request was fine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from app.store.errors import is_connection_lost, is_unavailable

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class RetryingRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def retrying(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                if request.method != "GET" or not is_connection_lost(exc):
                    raise
                log.warning("%s %s: %s; retrying once", request.method, request.url.path, exc)
                return await handler(request)

        return retrying


async def unavailable(request: Request, exc: Exception) -> Response:
    if not is_unavailable(exc):
        raise exc
    detail = str(exc).split("\n", 1)[0][:300]
    return JSONResponse(
        {"detail": f"the database is unavailable, try again: {detail}"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
