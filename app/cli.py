"""`transport-informer`: hub, agent, demo, db upgrade and tokens.

Flags override `TI_*` environment variables, which override the defaults in `app.config`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from app.config import AgentSettings, HubSettings, parse_labels


def _flags(parser: argparse.ArgumentParser, *names: tuple[str, str, type, str]) -> None:
    for flag, dest, kind, help_ in names:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_)


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", "db_command", "tokens_command", "func"}
    return {k: v for k, v in vars(args).items() if v is not None and k not in skip}


def tune_gc() -> None:
    """Collect cycles less often. The hub and agents allocate millions of short-lived,
    acyclic JSON objects, which the default thresholds (700 allocations) turn into constant
    collections: decoding a 1 MB payload took 19 ms instead of 3 ms with a large heap."""
    gc.set_threshold(50_000, 20, 100)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("gmqtt").setLevel(logging.WARNING)


COMMON = (
    ("--broker", "broker_url", str, "MQTT broker, mqtt://host:port (TI_BROKER_URL)"),
    ("--source", "source", str, "hub deployment name used in topics (TI_SOURCE)"),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING (TI_LOG_LEVEL)"),
)


def run_hub(args: argparse.Namespace) -> None:
    import uvicorn

    from app.web.app import create_app

    settings = HubSettings(**_settings_overrides(args))
    _logging(settings.log_level)
    tune_gc()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=3,
        # The hub judges X-Forwarded-* itself, only from TI_AUTH_PROXY_ADDRESSES: the
        # client address it sees must be the TCP peer (auth-proxy mode trusts by it).
        proxy_headers=False,
    )


async def _agent_main(settings: AgentSettings) -> None:
    from app.agent.service import Agent
    from app.agent.sources.base import ClusterSource
    from app.agent.sources.kubernetes import KubernetesSource
    from app.agent.sources.sim import SimulatedCluster, truth_endpoint
    from app.informer.objects import KindKey

    kinds = [KindKey.parse(k) for k in settings.kinds.split(",") if k.strip()]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        source: ClusterSource
        if settings.source_kind == "sim":
            source = sim = SimulatedCluster(
                cluster=settings.cluster,
                objects=settings.sim_objects,
                churn_per_s=settings.sim_churn,
                seed=settings.sim_seed,
                kinds=kinds,
            )
            if settings.debug_truth_port is not None:
                port = await stack.enter_async_context(
                    truth_endpoint(sim, settings.debug_truth_port)
                )
                logging.getLogger(__name__).warning(
                    "debug truth endpoint on http://127.0.0.1:%d/truth", port
                )
        else:
            source = await stack.enter_async_context(
                KubernetesSource.from_kubeconfig(settings.kubeconfig, kinds)
            )
        agent = Agent(
            cluster=settings.cluster,
            source=source,
            broker_url=settings.broker_url,
            labels=parse_labels(settings.labels),
            hub_source=settings.source,
            heartbeat_s=settings.heartbeat_s,
            resync_s=settings.resync_s,
            max_pending=settings.max_pending,
            chunk_bytes=settings.chunk_bytes,
            max_inflight=settings.max_inflight,
            send_messages_per_s=settings.send_messages_per_s,
            send_bytes_per_s=settings.send_bytes_per_s,
        )
        async with agent:
            logging.getLogger(__name__).info(
                "agent %s watching %d kinds (%s source)",
                settings.cluster,
                len(kinds),
                settings.source_kind,
            )
            await stop.wait()


def run_agent(args: argparse.Namespace) -> None:
    settings = AgentSettings(**_settings_overrides(args))
    _logging(settings.log_level)
    if settings.source_kind not in ("sim", "kubernetes"):
        sys.exit("--source-kind must be sim or kubernetes")
    if settings.debug_truth_port is not None and settings.source_kind != "sim":
        sys.exit("--debug-truth-port serves the sim source's state: it needs --source-kind sim")
    tune_gc()
    asyncio.run(_agent_main(settings))


def run_db_upgrade(args: argparse.Namespace) -> None:
    from app.store.migrate import upgrade

    settings = HubSettings(**_settings_overrides(args))
    _logging(settings.log_level)
    upgrade(settings.database_url)
    print(f"database {settings.database_url} is at the latest schema")


def run_tokens(args: argparse.Namespace) -> None:
    from app.tokens_cli import run

    settings = HubSettings(
        **{k: v for k, v in _settings_overrides(args).items() if k in ("database_url",)}
    )
    sys.exit(run(args, settings.database_url))


def run_demo(args: argparse.Namespace) -> None:
    from app.demo import run

    run(port=args.port or 8000, database_url=args.database_url)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transport-informer",
        description="Kubernetes list/watch over MQTT: agents in clusters, a SQL-backed hub.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    hub = sub.add_parser("hub", help="run the hub: MQTT ingest, SQL store, REST + SSE")
    _flags(
        hub,
        *COMMON,
        ("--database-url", "database_url", str, "SQLAlchemy URL (TI_DATABASE_URL)"),
        ("--redis-url", "redis_url", str, "redis://host:port/0, optional (TI_REDIS_URL)"),
        ("--host", "host", str, "HTTP bind address (TI_HOST)"),
        ("--port", "http_port", int, "HTTP port, default 8000 (TI_HTTP_PORT)"),
        ("--replica-id", "replica_id", str, "this replica's name (TI_REPLICA_ID)"),
        ("--share-group", "share_group", str, "MQTT shared-subscription group"),
        (
            "--allowed-hosts",
            "allowed_hosts",
            str,
            "Host header values answered, comma-separated (TI_ALLOWED_HOSTS; "
            "default 127.0.0.1,localhost,::1)",
        ),
    )
    hub.set_defaults(func=run_hub)

    agent = sub.add_parser("agent", help="run an agent for one cluster")
    _flags(
        agent,
        *COMMON,
        ("--cluster", "cluster", str, "this cluster's name (TI_CLUSTER)"),
        ("--labels", "labels", str, "cluster labels k=v,k2=v2 (TI_LABELS)"),
        ("--source-kind", "source_kind", str, "kubernetes or sim (TI_SOURCE_KIND)"),
        ("--kinds", "kinds", str, "e.g. v1/Pod,apps/v1/Deployment (TI_KINDS)"),
        ("--kubeconfig", "kubeconfig", str, "kubeconfig path (in-cluster when unset)"),
        ("--sim-objects", "sim_objects", int, "simulated objects (TI_SIM_OBJECTS)"),
        ("--sim-churn", "sim_churn", float, "simulated changes per second (TI_SIM_CHURN)"),
        ("--sim-seed", "sim_seed", int, "seed of the simulated cluster"),
        ("--heartbeat", "heartbeat_s", float, "heartbeat period, seconds"),
        ("--resync", "resync_s", float, "digest resync period, seconds"),
        (
            "--debug-truth-port",
            "debug_truth_port",
            int,
            "sim source only, debugging aid: serve GET /truth on 127.0.0.1:PORT "
            "(TI_DEBUG_TRUTH_PORT)",
        ),
    )
    agent.set_defaults(func=run_agent)

    demo = sub.add_parser("demo", help="broker + hub + three simulated clusters, locally")
    demo.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    demo.add_argument("--database-url", default="sqlite:///./data/hub.db")
    demo.set_defaults(func=run_demo)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="migrate the schema to the latest version")
    _flags(
        upgrade,
        ("--database-url", "database_url", str, "SQLAlchemy URL (TI_DATABASE_URL)"),
        ("--log-level", "log_level", str, "log level"),
    )
    upgrade.set_defaults(func=run_db_upgrade)

    tokens = sub.add_parser("tokens", help="API tokens: create, list, revoke, sign-in link")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    db_flag = ("--database-url", "database_url", str, "SQLAlchemy URL (TI_DATABASE_URL)")
    create = tokens_sub.add_parser("create", help="make a token; printed once, on the last line")
    _flags(create, db_flag)
    create.add_argument("--name", required=True, help="unique name, e.g. alice or ci-bot")
    create.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    create.add_argument("--clusters", help="label selector of the clusters it sees (all if unset)")
    create.add_argument("--expires", help="lifetime: 30d, 12h, 15m, or never (default)")
    listing = tokens_sub.add_parser("list", help="tokens (never their secrets)")
    _flags(listing, db_flag)
    revoke = tokens_sub.add_parser("revoke", help="revoke a token and its dashboard sessions")
    _flags(revoke, db_flag)
    revoke.add_argument("name")
    link = tokens_sub.add_parser("link", help="a one-time dashboard sign-in link for a token")
    _flags(link, db_flag)
    link.add_argument("name")
    link.add_argument("--base-url", default="http://127.0.0.1:8000", help="the hub's URL")
    tokens.set_defaults(func=run_tokens)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
