"""Auth-proxy mode (Grafana's auth.proxy): a user and groups header, believed only from
the configured proxy addresses, groups mapped to roles and cluster scopes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from app.broker import Mosquitto
from tests.harness import live_hub

PROXY = {
    "auth_proxy_user_header": "X-Forwarded-User",
    "auth_proxy_groups_header": "X-Forwarded-Groups",
    "auth_proxy_groups": {"ops": "admin", "dev-team": "operator:env=dev", "all": "viewer"},
}


def user(name: str, groups: str = "") -> dict[str, str]:
    return {"X-Forwarded-User": name, "X-Forwarded-Groups": groups}


async def test_users_from_the_proxy_get_the_roles_of_their_groups(
    broker: Mosquitto, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {**PROXY, "auth_proxy_addresses": "127.0.0.1/32"}
    url = f"sqlite:///{tmp_path}/h.db"
    async with live_hub(broker_url=broker.url, database_url=url, **settings) as hub:
        async with hub.client(headers=user("alice@example.com", "all,ops")) as alice:
            me = (await alice.get("/whoami")).json()
            assert me == {
                "name": "alice@example.com",
                "role": "admin",
                "clusters": None,
                "via": "proxy",
            }
        async with hub.client(headers=user("bob", "dev-team, all")) as bob:
            me = (await bob.get("/whoami")).json()
            assert me["role"] == "operator" and me["clusters"] == "env=dev"
            # a dashboard change from the proxy's user needs the CSRF token of its pages
            page = (await bob.get("/ui/workloads/new")).text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert csrf is not None
            form = {"name": "w", "manifests": "kind: ConfigMap", "labelSelector": "a=b"}
            origin = {"Origin": hub.url}
            refused = await bob.post("/ui/workloads", data=form, headers=origin)
            assert refused.status_code == 403
            accepted = await bob.post(
                "/ui/workloads", data={**form, "csrf_token": csrf.group(1)}, headers=origin
            )
            assert accepted.status_code == 422  # through the checks: the YAML is no workload
        async with hub.client(headers=user("carol", "sales")) as carol:
            nobody = await carol.get("/clusters")
            assert nobody.status_code == 403 and "no role" in nobody.json()["detail"]


async def test_the_user_header_from_elsewhere_is_ignored_and_recorded(
    broker: Mosquitto, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {**PROXY, "auth_proxy_addresses": "10.9.9.9"}
    url = f"sqlite:///{tmp_path}/h.db"
    async with live_hub(broker_url=broker.url, database_url=url, **settings) as hub:
        async with hub.client(headers=user("mallory", "ops")) as mallory:
            assert (await mallory.get("/clusters")).status_code == 401
        failed = (await hub.get("/audit", action="signin.failed"))["items"][0]
        assert failed["target"] == "mallory" and "untrusted" in failed["detail"]
        assert failed["source"] == "127.0.0.1"
