"""The API's description: every status it answers, the bearer scheme, and `/docs` served
from vendored Swagger UI (no CDN, no inline script: the page passes its settings to
`static/swagger-init.js` in data attributes).

Both `/openapi.json` and `/docs` need a principal (viewer and above), like every route but
the health checks.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse

from app.access.roles import Role
from app.web.auth import needs

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "description": "Why, in words; for a request that does not validate (422), the "
            "list of problems, each with where (`loc`) and why (`msg`)",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}],
        }
    },
}


def _error(description: str) -> dict[str, Any]:
    """An error answer: JSON with `detail`, whatever the route's own media type."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("Bad request (a parameter or the Host header) or a bad selector"),
    401: _error("No credentials, or a token that is unknown, revoked or expired"),
    403: _error("The principal's role does not allow it, or a CSRF/Origin check failed"),
    413: _error("Request body over max_body_bytes"),
    422: _error("A parameter or the body does not validate (the detail says where)"),
    503: _error("The database is unavailable; Retry-After says when to try again"),
}
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: _error("Unknown, or not in the principal's cluster scope"),
    409: _error("Ambiguous kind (several apiVersions)"),
}
STREAM_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    429: _error("Too many open streams (in total or of this principal); see Retry-After"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **READ_ERRORS,
    403: _error(
        "The role does not allow it, or the admission policy refuses a manifest "
        "(the detail names the object and the rule)"
    ),
    409: _error("A workload or token of that name exists"),
}

PUBLIC = ("/healthz", "/readyz", "/agent/ca", "/agent/join", "/agent/renew")
"""Operations without the bearer scheme: the health checks, and the agents' enrolment (a
join token or the client certificate authenticates it)."""
ENROLMENT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A request body that does not parse, or a CSR that is not acceptable"),
    403: _error("A join token that is wrong, used or expired; a certificate not issued here"),
    404: _error("This hub runs without PKI (insecure mode): nothing to join"),
    413: _error("Request body over its limit"),
    503: _error("The database is unavailable; Retry-After says when to try again"),
}
CLUSTER_ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    403: _error("Not an admin, or an admin scoped to some clusters"),
    404: _error("No such registered cluster"),
    409: _error("A cluster of that name is registered, or the hub runs without PKI"),
}


def json_body(model: type[Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body itself (with a size limit)."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The generated document plus the bearer scheme (every operation but the health
    checks requires it)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "an API token"}
    }
    doc["security"] = [{"bearer": []}]
    for path in PUBLIC:
        for operation in doc["paths"].get(path, {}).values():
            operation["security"] = []
    app.openapi_schema = doc
    return doc


router = APIRouter(include_in_schema=False, dependencies=[needs(Role.VIEWER)])

DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Transport Informer API</title>
  <link rel="stylesheet" href="/static/vendor/swagger-ui/swagger-ui.css">
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
  <div id="swagger-ui" data-url="/openapi.json"></div>
  <script src="/static/vendor/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="/static/swagger-init.js"></script>
</body>
</html>
"""


@router.get("/openapi.json")
async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(request.app))


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return HTMLResponse(DOCS_PAGE)
