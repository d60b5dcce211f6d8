"""`transport-informer tokens ...`: the token alone on the last line, hashes only, list,
revoke and one-time links, all audited."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from app.store import access, audit
from app.store.db import create_engine


def cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "tokens", *args, "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_list_link_revoke(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/hub.db"
    made = cli(
        "create",
        "--name",
        "alice",
        "--role",
        "operator",
        "--clusters",
        "env=dev",
        "--expires",
        "30d",
        database_url=url,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    assert token.startswith("ti_") and " " not in token
    assert "role operator, clusters env=dev, expires 20" in made.stdout
    again = cli("create", "--name", "alice", "--role", "viewer", database_url=url)
    assert again.returncode == 1 and "exists" in again.stderr
    bad = cli("create", "--name", "x", "--role", "viewer", "--clusters", "a in (", database_url=url)
    assert bad.returncode == 2

    listing = cli("list", database_url=url).stdout
    assert "alice" in listing and "env=dev" in listing and token not in listing
    assert (tmp_path / "hub.db").read_bytes().find(token.encode()) == -1

    link = cli("link", "alice", "--base-url", "http://hub:8000", database_url=url)
    assert link.stdout.splitlines()[-1].startswith("http://hub:8000/login?token=tit_")

    assert cli("revoke", "alice", database_url=url).returncode == 0
    assert cli("revoke", "alice", database_url=url).returncode == 1

    async def check() -> None:
        engine = create_engine(url)
        assert await access.token_by_secret(engine, token) is None
        page = await audit.list_audit(engine)
        await engine.dispose()
        assert [e["action"] for e in page.items] == ["token.revoke", "token.create"]
        assert page.items[0]["via"] == "cli"

    asyncio.run(check())
