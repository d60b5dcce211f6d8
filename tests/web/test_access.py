"""Who may do what over HTTP: authentication, roles, tokens, sessions, CSRF, headers and
the audit log, through a live hub."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi.routing import APIRoute

from app.store import access as store
from tests.harness import ADMIN_TOKEN, LiveHub

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/login"),
    ("POST", "/login"),
    # agents: a join token or their client certificate authenticates them (security.md)
    ("GET", "/agent/ca"),
    ("POST", "/agent/join"),
    ("POST", "/agent/renew"),
}

WORKLOAD = {
    "name": "web",
    "manifests": [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web", "namespace": "shop"},
            "data": {"a": "b"},
        }
    ],
    "placement": {"labelSelector": "env=dev"},
}
CRB = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRoleBinding",
    "metadata": {"name": "owned"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "x"},
    "subjects": [{"kind": "User", "name": "mallory"}],
}


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, in included routers too (FastAPI includes them lazily)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif (router := getattr(route, "original_router", None)) is not None:
            found += api_routes(router.routes)
    return found


def routes(hub: LiveHub) -> list[tuple[str, str]]:
    assert hub.app is not None
    return [
        (method, re.sub(r"\{[^}]+\}", "x", route.path))
        for route in api_routes(hub.app.routes)
        for method in sorted(route.methods)
        if method != "HEAD"
    ]


async def test_every_route_but_the_health_checks_and_sign_in_answers_401_anonymously(
    fleet_hub: LiveHub,
) -> None:
    checked = 0
    async with fleet_hub.client() as anonymous:
        for method, path in routes(fleet_hub):
            if (method, path) in PUBLIC:
                continue
            response = await anonymous.request(method, path, params={"cluster": "x", "since": 0})
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/static/app.css")).status_code == 200  # assets are public
        api = await anonymous.get("/clusters")
        assert api.headers["www-authenticate"] == "Bearer"
        page = await anonymous.get("/ui/workloads")  # a page answers with the sign-in form
        assert page.status_code == 401 and 'action="/login"' in page.text
    assert checked >= 30


async def test_a_viewer_reads_but_may_not_create(fleet_hub: LiveHub) -> None:
    viewer = await fleet_hub.token("val", "viewer")
    async with fleet_hub.client(viewer) as http:
        assert (await http.get("/clusters")).status_code == 200
        assert (await http.get("/workloads")).status_code == 200
        refused = await http.post("/workloads", json=WORKLOAD)
        assert refused.status_code == 403
        assert "operator" in refused.json()["detail"]
        assert (await http.get("/audit")).status_code == 403
        assert (await http.post("/tokens", json={"name": "x", "role": "admin"})).status_code == 403
    audit = (await fleet_hub.get("/audit", action="forbidden"))["items"]
    assert audit[0]["actor"] == "val" and audit[0]["outcome"] == "denied"


async def test_a_revoked_token_stops_working_at_once(fleet_hub: LiveHub) -> None:
    token = await fleet_hub.token("rita", "viewer")
    async with fleet_hub.client(token) as http:
        assert (await http.get("/clusters")).status_code == 200
        assert (await fleet_hub.http.delete("/tokens/rita")).status_code == 204
        gone = await http.get("/clusters")
        assert gone.status_code == 401 and "revoked" in gone.json()["detail"]
    entries = (await fleet_hub.get("/audit"))["items"]
    assert [e["action"] for e in entries[:2]] == ["signin.failed", "token.revoke"]


async def test_an_expired_token_stops_working(fleet_hub: LiveHub) -> None:
    token = await fleet_hub.token("eve", "viewer", expires="2s")
    async with fleet_hub.client(token) as http:
        assert (await http.get("/clusters")).status_code == 200
        await asyncio.sleep(2.1)  # the token's lifetime, not a wait for the hub
        expired = await http.get("/clusters")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


async def test_tokens_are_stored_only_as_hashes(fleet_hub: LiveHub) -> None:
    token = await fleet_hub.token("hash", "viewer")
    async with fleet_hub.hub.engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT * FROM api_tokens")).all()
    assert rows and not any(token in str(value) for row in rows for value in row)
    assert store.digest(token) in {row.token_hash for row in rows}


@asynccontextmanager
async def signed_in(hub: LiveHub, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: signed in through the form, cookies kept, Origin sent."""
    async with hub.client(headers={"Origin": hub.url}) as client:
        response = await client.post("/login", data={"token": token, "next": "/ui/workloads"})
        assert response.status_code == 303 and response.headers["location"] == "/ui/workloads"
        yield client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def test_the_session_cookie_has_its_flags_and_sign_out_ends_it(fleet_hub: LiveHub) -> None:
    token = await fleet_hub.token("sam", "operator")
    async with fleet_hub.client(headers={"Origin": fleet_hub.url}) as client:
        response = await client.post("/login", data={"token": token})
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("ti_session=tis_")
        for flag in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age="):
            assert flag.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http here; Secure behind https
        page = (await client.get("/ui/workloads")).text
        assert "sam" in page and "Sign out" in page
        out = await client.post("/logout", data={"csrf_token": csrf_of(page)})
        assert out.status_code == 303
        assert (await client.get("/clusters")).status_code == 401  # the session is gone
    actions = [e["action"] for e in (await fleet_hub.get("/audit"))["items"]]
    assert actions[:2] == ["signout", "signin"]


async def test_behind_https_the_cookie_is_secure(fleet_hub: LiveHub) -> None:
    fleet_hub.app.state.access.cookie_secure = True  # type: ignore[union-attr]
    token = await fleet_hub.token("sue", "viewer")
    async with fleet_hub.client(headers={"Origin": fleet_hub.url}) as client:
        cookie = (await client.post("/login", data={"token": token})).headers["set-cookie"]
    assert "secure" in cookie.lower()


async def test_a_revoked_token_ends_its_sessions(fleet_hub: LiveHub) -> None:
    token = await fleet_hub.token("tom", "viewer")
    async with signed_in(fleet_hub, token) as client:
        assert (await client.get("/clusters")).status_code == 200
        await fleet_hub.http.delete("/tokens/tom")
        assert (await client.get("/clusters")).status_code == 401


async def test_cross_origin_and_tokenless_dashboard_posts_are_refused(fleet_hub: LiveHub) -> None:
    form = {
        "name": "evil",
        "manifests": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n",
        "labelSelector": "env=dev",
    }
    async with signed_in(fleet_hub, await fleet_hub.token("otto", "operator")) as client:
        page = (await client.get("/ui/workloads/new")).text
        csrf = csrf_of(page)
        evil = await client.post(
            "/ui/workloads",
            data={**form, "csrf_token": csrf},
            headers={"Origin": "http://evil.example"},
        )
        assert evil.status_code == 403 and "cross-origin" in evil.json()["detail"]
        missing = await client.post("/ui/workloads", data=form)
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        wrong = await client.post("/ui/workloads", data={**form, "csrf_token": "x" * 43})
        assert wrong.status_code == 403
        no_origin = client.build_request(
            "POST", "/ui/workloads/x/delete", data={"csrf_token": csrf}
        )
        del no_origin.headers["Origin"]
        assert (await client.send(no_origin)).status_code == 403
        assert (await fleet_hub.http.get("/workloads/evil")).status_code == 404
        ok = await client.post("/ui/workloads", data={**form, "csrf_token": csrf})
        assert ok.status_code == 303
        # htmx sends the token as a header
        preview = await client.post(
            "/ui/workloads/preview", data=form, headers={"X-CSRF-Token": csrf}
        )
        assert preview.status_code == 200 and "dev-1" in preview.text
        # a form post from another site to sign someone in is refused too
        foreign = await client.post(
            "/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403


async def test_operator_rbac_is_refused_naming_the_rule_admin_may(fleet_hub: LiveHub) -> None:
    operator = await fleet_hub.token("olga", "operator")
    body = {**WORKLOAD, "name": "rbac", "manifests": [CRB]}
    async with fleet_hub.client(operator) as http:
        refused = await http.post("/workloads", json=body)
        assert refused.status_code == 403
        detail = refused.json()["detail"]
        assert "ClusterRoleBinding owned" in detail and "rule rbac" in detail
        system = {
            **WORKLOAD,
            "name": "sys",
            "manifests": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c", "namespace": "kube-system"},
                }
            ],
        }
        protected = await http.post("/workloads", json=system)
        assert protected.status_code == 403 and "protected-namespace" in protected.json()["detail"]
        assert (await http.post("/workloads", json=WORKLOAD)).status_code == 201
    assert (await fleet_hub.http.post("/workloads", json=body)).status_code == 201
    denied = (await fleet_hub.get("/audit", action="workload.create"))["items"]
    assert [(e["actor"], e["outcome"]) for e in denied] == [
        ("bootstrap", "ok"),
        ("olga", "ok"),
        ("olga", "denied"),
        ("olga", "denied"),
    ]
    policy = await fleet_hub.get("/policy")
    assert "ClusterRoleBinding" in policy["rbacKinds"]
    assert "kube-system" in policy["protectedNamespaces"]


async def test_the_audit_log_says_who_what_when_and_from_where(fleet_hub: LiveHub) -> None:
    operator = await fleet_hub.token("ann", "operator")
    async with fleet_hub.client(operator) as http:
        await http.post("/workloads", json=WORKLOAD)
        await http.put("/workloads/web", json=WORKLOAD)
        await http.delete("/workloads/web")
    async with fleet_hub.client("ti_wrong") as http:
        assert (await http.get("/clusters")).status_code == 401
    entries = (await fleet_hub.get("/audit", limit=6))["items"]
    assert [e["action"] for e in entries[:4]] == [
        "signin.failed",
        "workload.delete",
        "workload.update",
        "workload.create",
    ]
    create = entries[3]
    assert create["actor"] == "ann" and create["role"] == "operator" and create["via"] == "token"
    assert create["source"] == "127.0.0.1" and create["target"] == "web"
    assert create["at"].endswith("Z")
    assert entries[0]["outcome"] == "failed" and entries[0]["actor"] == ""


async def test_headers_on_every_response(fleet_hub: LiveHub) -> None:
    for path in ("/", "/clusters", "/healthz", "/static/app.js", "/login"):
        response = await fleet_hub.http.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
    assert (await fleet_hub.http.get("/clusters")).headers["cache-control"] == "no-store"


async def test_pages_hold_no_inline_script(fleet_hub: LiveHub) -> None:
    for path in ("/", "/ui/workloads", "/ui/workloads/new", "/ui/events", "/ui/audit", "/docs"):
        page = (await fleet_hub.http.get(path)).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path
        assert not re.search(r"\son[a-z]+=", page), path


async def test_a_foreign_host_header_is_refused(fleet_hub: LiveHub) -> None:
    rebound = await fleet_hub.http.get("/clusters", headers={"Host": "attacker.example"})
    assert rebound.status_code == 400
    assert (
        await fleet_hub.http.get("/clusters", headers={"Host": "localhost:1"})
    ).status_code == 200
    probe = await fleet_hub.http.get("/healthz", headers={"Host": "10.1.2.3:8000"})
    assert probe.status_code == 200  # orchestrators probe by address


async def test_docs_are_served_offline(fleet_hub: LiveHub) -> None:
    page = (await fleet_hub.http.get("/docs")).text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    assert "http" not in page.replace('href="/', "").split("<body>")[1]  # nothing remote
    assert (await fleet_hub.http.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")).is_success
    doc = (await fleet_hub.http.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    statuses = doc["paths"]["/workloads"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "422", "503"} <= set(statuses)
    assert "429" in doc["paths"]["/stream"]["get"]["responses"]


async def test_metrics_need_an_unscoped_principal(fleet_hub: LiveHub) -> None:
    viewer = await fleet_hub.token("prom", "viewer")
    scoped = await fleet_hub.token("dev-prom", "viewer", clusters="env=dev")
    async with fleet_hub.client(viewer) as a, fleet_hub.client(scoped) as b:
        assert (await a.get("/metrics")).status_code == 200
        assert (await b.get("/metrics")).status_code == 403


async def test_tokens_api_lists_and_refuses_escalation(fleet_hub: LiveHub) -> None:
    scoped_admin = await fleet_hub.token("dev-admin", "admin", clusters="env=dev")
    async with fleet_hub.client(scoped_admin) as http:
        wider = await http.post("/tokens", json={"name": "w", "role": "viewer"})
        assert wider.status_code == 403
        same = await http.post(
            "/tokens", json={"name": "dev-view", "role": "viewer", "clusters": "env=dev"}
        )
        assert same.status_code == 201
        names = [t["name"] for t in (await http.get("/tokens")).json()["items"]]
        assert names == ["dev-admin", "dev-view"]
    taken = await fleet_hub.http.post("/tokens", json={"name": "dev-view", "role": "viewer"})
    assert taken.status_code == 409


async def test_a_one_time_sign_in_link_works_once(fleet_hub: LiveHub) -> None:
    await fleet_hub.token("link", "viewer")
    ticket = await store.create_ticket(fleet_hub.hub.engine, "link", time.time() + 60)
    async with fleet_hub.client() as browser:
        first = await browser.get(f"/login?token={ticket}")
        assert first.status_code == 303 and "ti_session=" in first.headers["set-cookie"]
        assert (await browser.get("/clusters")).status_code == 200
    async with fleet_hub.client() as other:
        again = await other.get(f"/login?token={ticket}")
        assert again.status_code == 401 and "used already" in again.text
        api_token = await fleet_hub.token("url", "viewer")
        assert (await other.get(f"/login?token={api_token}")).status_code == 401
