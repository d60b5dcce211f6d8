"""A bounded schemathesis run (`--checks all`) against a live hub: the OpenAPI document
declares every status the API answers and the constraints it enforces, and no request
makes the hub fail. Fixed examples per operation and a seed, so it takes about half a
minute and finds the same things twice. Settings in `schemathesis.toml` (repo root).

`/stream` is left out: an event stream never ends, and schemathesis reads whole bodies
(tests/web/test_sse.py covers it, tests/web/test_limits.py its 429)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from app.broker import Mosquitto
from app.informer.deltas import ClusterHello, Upsert
from app.informer.objects import KindKey
from app.store.db import create_engine
from app.store.migrate import upgrade_async
from app.store.writer import InventoryWriter
from tests.conftest import wait_until
from tests.harness import ADMIN_TOKEN, live_hub
from tests.objects import event

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
EXAMPLES = 10
SEED = 1


@pytest.mark.timeout(300)
async def test_schemathesis_with_every_check_finds_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/hub.db"
    await upgrade_async(url)
    engine = create_engine(url)
    await InventoryWriter(engine).apply(
        [
            ClusterHello("dev-1", {"env": "dev"}, (KindKey("v1", "Pod"),), 5, "1"),
            Upsert("dev-1", event("ADDED", "web", 1, labels={"app": "web"})),
        ]
    )
    await engine.dispose()
    async with live_hub(broker_url=broker.url, database_url=url) as hub:

        async def ready() -> bool:
            return (await hub.http.get("/readyz")).status_code == 200

        await wait_until(ready, what="hub ready")
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            f"{hub.url}/openapi.json",
            *("--checks", "all"),
            *("--header", f"Authorization: Bearer {ADMIN_TOKEN}"),
            *("--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1"),
            *("--generation-database", "none", "--request-timeout", "10"),
            *("--exclude-path", "/stream", "--no-color"),
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    assert process.returncode == 0, text[-6000:]
    assert "failures" not in text.splitlines()[-1] or " 0 failures" in text
