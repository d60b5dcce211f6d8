"""Defences every response gets, whatever the route: an ASGI middleware.

- **Host allow-list.** A request whose Host header is not in `allowed_hosts` is answered
  400 before any route runs: a page on another site that resolves its own name to this
  hub's address (DNS rebinding) cannot read the API. `/healthz` and `/readyz` are exempt
  (orchestrators probe them by IP).
- **Body size.** A body over `max_body_bytes` is answered 413, whether it announces its
  length (refused before reading) or not (refused once that many bytes have arrived).
- **Security headers** on every response: a Content-Security-Policy allowing only this
  origin's scripts and styles (no inline script, no eval), no framing, nosniff, a
  same-origin Referrer-Policy and Cache-Control: no-store for anything but `/static`.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
UNCHECKED_HOST = ("/healthz", "/readyz")


class BodyTooLarge(HTTPException):
    """Raised from `receive`: an HTTPException, so whatever was reading the body (a form,
    FastAPI's JSON parsing) lets it through and it is answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """`host` is a Host header (port and IPv6 brackets allowed); patterns are exact names,
    `*.example.com` (any subdomain) or `*`."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if not name:
        return False
    for pattern in allowed:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def parse_hosts(text: str) -> tuple[str, ...]:
    return tuple(h.strip().lower().strip("[]") for h in text.split(",") if h.strip())


class HttpGuards:
    def __init__(self, app: ASGIApp, *, allowed_hosts: tuple[str, ...], max_body_bytes: int):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        static = path.startswith("/static/")
        https = scope.get("scheme") == "https"
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = list(HEADERS)
                names = {k.lower() for k, _ in message.get("headers", [])}
                if not static and b"cache-control" not in names:
                    extra.append((b"cache-control", b"no-store"))
                if https:
                    extra.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        if path not in UNCHECKED_HOST and not host_allowed(
            headers.get(b"host", b"").decode("latin-1"), self.allowed_hosts
        ):
            await _answer(send_with_headers, 400, "this hub does not answer for that Host header")
            return
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _answer(send_with_headers, 413, self._too_large())
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            await self.app(scope, counted, send_with_headers)
        except BodyTooLarge:
            if started:
                raise
            await _answer(send_with_headers, 413, self._too_large())

    def _too_large(self) -> str:
        return f"the request body is over the limit of {self.max_body_bytes} bytes"


async def _answer(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
