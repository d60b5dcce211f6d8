"""`transport-informer`: hub, agent, demo, db upgrade, tokens, pki init and clusters
add/list/remove.

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
from app.transport.topics import DEFAULT_SOURCE


def _flags(parser: argparse.ArgumentParser, *names: tuple[str, str, type, str]) -> None:
    for flag, dest, kind, help_ in names:
        parser.add_argument(flag, dest=dest, type=kind, default=None, help=help_)


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", "db_command", "tokens_command", "pki_command", "clusters_command", "func"}
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


PKI_FLAGS = (
    ("--pki-dir", "pki_dir", str, "made by `pki init` (TI_PKI_DIR)"),
    ("--ca-file", "ca_file", str, "CA bundle (TI_CA_FILE; default <pki-dir>/ca.crt)"),
    ("--cert-file", "cert_file", str, "the hub's certificate (TI_CERT_FILE)"),
    ("--key-file", "key_file", str, "the hub's key (TI_KEY_FILE)"),
    ("--signer-cert-file", "signer_cert_file", str, "CA signing clusters (TI_SIGNER_CERT_FILE)"),
    ("--signer-key-file", "signer_key_file", str, "its key (TI_SIGNER_KEY_FILE)"),
)


def run_hub(args: argparse.Namespace) -> None:
    import uvicorn

    from app.hub.hub_pki import HubPki
    from app.web.app import create_app
    from app.web.tls import server_options

    settings = HubSettings(**_settings_overrides(args))
    _logging(settings.log_level)
    tune_gc()
    try:
        pki = HubPki.from_settings(settings)
    except ValueError as exc:
        sys.exit(f"hub: {exc}")
    if pki is not None and not settings.broker_url.startswith("mqtts://"):
        sys.exit(f"hub: with PKI the broker URL must be mqtts://, not {settings.broker_url}")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=3,
        # The hub judges X-Forwarded-* itself, only from TI_AUTH_PROXY_ADDRESSES: the
        # client address it sees must be the TCP peer (auth-proxy mode trusts by it).
        proxy_headers=False,
        **server_options(pki),
    )


async def _identity(settings: AgentSettings) -> Any:
    """The agent's certificate from its state dir, joining first if there is none yet (or
    it expired and a token was given); None without a state dir (insecure mode)."""
    from pathlib import Path

    from app.agent.identity import AgentIdentity, JoinFailed, join

    log = logging.getLogger(__name__)
    token = settings.join_token
    if settings.join_token_file:
        token = (await asyncio.to_thread(Path(settings.join_token_file).read_text)).strip()
    if settings.state_dir is None:
        if settings.join_url or token:
            sys.exit("agent: --join and --token need --state-dir (where the key is kept)")
        log.warning(
            "INSECURE MODE: no --state-dir, so no certificate: the agent connects without TLS "
            "client authentication (development only; see docs/security.md)"
        )
        return None
    state_dir = Path(settings.state_dir)
    try:
        identity = AgentIdentity.load(state_dir, settings.cluster)
        if identity is not None and not identity.expired:
            if token:
                log.info("reusing the identity in %s; the token is not needed", state_dir)
            return identity
        if not (settings.join_url and token):
            why = "has expired" if identity is not None else "is missing"
            sys.exit(
                f"agent: the certificate in {state_dir} {why}: join with --join "
                "https://HUB --token TOKEN (an admin makes one: transport-informer clusters add "
                f"{settings.cluster} --new-token)"
            )
        identity = await join(state_dir, settings.cluster, settings.join_url, token)
    except JoinFailed as exc:
        sys.exit(f"agent: {exc}")
    log.info("%s joined %s; identity kept in %s", settings.cluster, settings.join_url, state_dir)
    return identity


async def _agent_main(settings: AgentSettings) -> None:
    from app.agent.identity import AgentIdentity, Renewer
    from app.agent.service import Agent
    from app.agent.sources.base import ClusterSource
    from app.agent.sources.kubernetes import KubernetesSource
    from app.agent.sources.sim import SimulatedCluster, truth_endpoint
    from app.informer.objects import KindKey

    kinds = [KindKey.parse(k) for k in settings.kinds.split(",") if k.strip()]
    identity: AgentIdentity | None = await _identity(settings)
    broker_url = settings.broker_url or (
        identity.broker_url if identity is not None else "mqtt://127.0.0.1:1883"
    )
    if identity is not None and not broker_url.startswith("mqtts://"):
        sys.exit(f"agent: with a certificate the broker URL must be mqtts://, not {broker_url}")
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
            broker_url=broker_url,
            labels=parse_labels(settings.labels),
            hub_source=settings.source,
            heartbeat_s=settings.heartbeat_s,
            resync_s=settings.resync_s,
            max_pending=settings.max_pending,
            chunk_bytes=settings.chunk_bytes,
            max_inflight=settings.max_inflight,
            send_messages_per_s=settings.send_messages_per_s,
            send_bytes_per_s=settings.send_bytes_per_s,
            tls=identity.tls_context() if identity is not None else None,
        )
        async with agent, asyncio.TaskGroup() as tasks:
            logging.getLogger(__name__).info(
                "agent %s watching %d kinds (%s source)",
                settings.cluster,
                len(kinds),
                settings.source_kind,
            )
            renewer = (
                tasks.create_task(Renewer(identity, agent.link).run())
                if identity is not None
                else None
            )
            await stop.wait()
            if renewer is not None:
                renewer.cancel()


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

    run(port=args.port or 8000, database_url=args.database_url, secure=not args.insecure)


def _hosts(text: str) -> list[str]:
    return [h.strip() for h in text.split(",") if h.strip()]


def run_pki_init(args: argparse.Namespace) -> None:
    from pathlib import Path

    from app.pki.layout import broker_name, hub_name, init_pki
    from app.transport.topics import check_name

    try:
        source = check_name(args.source, "source")
        pki = init_pki(
            Path(args.dir),
            source=source,
            broker_hosts=_hosts(args.broker_host),
            hub_hosts=_hosts(args.hub_host),
        )
    except (FileExistsError, ValueError) as exc:
        sys.exit(f"pki init: {exc}")
    print(f"made a CA and certificates in {pki.root}/:")
    print("  ca.crt, ca.key          the CA (keep ca.key secret: it signs every identity)")
    print(f"  broker.crt, broker.key  CN {broker_name(source)}, for {args.broker_host}")
    print(f"  hub.crt, hub.key        CN {hub_name(source)}, for {args.hub_host}")
    print("  crl.pem                 revoked certificates (empty), the broker's crlfile")
    print(f"start the hub with --pki-dir {pki.root}; the broker with deploy/mosquitto.conf")


def _cluster_settings(args: argparse.Namespace) -> HubSettings:
    values = {k: v for k, v in _settings_overrides(args).items() if k in HubSettings.model_fields}
    settings = HubSettings(**values)
    _logging(settings.log_level if "log_level" in values else "WARNING")
    return settings


def run_clusters_add(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from app.hub.cluster_admin import add_cluster, agent_command
    from app.hub.hub_pki import HubPki
    from app.pki.layout import write_atomic
    from app.store import registrations as store
    from app.store.db import create_engine
    from app.store.migrate import upgrade

    settings = _cluster_settings(args)
    try:
        pki = HubPki.from_settings(settings)
        labels = parse_labels(args.labels or "")
    except ValueError as exc:
        sys.exit(f"clusters add: {exc}")
    if pki is None:
        sys.exit("clusters add: needs the hub's CA: --pki-dir DIR (or --ca-file), as the hub has")
    hub_url = settings.public_url or f"https://{settings.host}:{settings.http_port}"
    upgrade(settings.database_url)

    async def add() -> Any:
        engine = create_engine(settings.database_url)
        try:
            return await add_cluster(
                engine,
                args.name,
                labels,
                ca_bundle=pki.ca_bundle(),
                hub_url=hub_url.rstrip("/"),
                token_ttl_s=args.token_ttl or settings.join_token_ttl_s,
                new_token_only=args.new_token,
                state_dir=args.agent_state_dir,
            )
        finally:
            await engine.dispose()

    try:
        ticket = asyncio.run(add())
    except ValueError as exc:
        sys.exit(f"clusters add: {exc}")
    except store.AlreadyRegistered:
        if args.exist_ok:
            print(f"cluster {args.name} is registered already; no new token")
            return
        sys.exit(
            f"clusters add: {args.name} is registered already; for a new join token: "
            f"transport-informer clusters add {args.name} --new-token"
        )
    except store.NotRegistered:
        sys.exit(f"clusters add: {args.name} is not registered (drop --new-token)")
    expires = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ticket.expires_at))
    command = ticket.command
    if args.token_file:
        write_atomic(Path(args.token_file), ticket.token.encode() + b"\n", 0o600)
        command = agent_command(
            ticket.cluster,
            hub_url.rstrip("/"),
            "",
            args.agent_state_dir,
            token_file=args.token_file,
        )
    what = "new join token for" if args.new_token else "registered cluster"
    print(f"{what} {ticket.cluster}" + (f" ({args.labels})" if labels else ""))
    print(f"join token (works once, until {expires}; only its hash is kept):")
    print(f"  {ticket.token}" if not args.token_file else f"  written to {args.token_file}")
    print("run this in the cluster:")
    print(f"  {command}")


def run_clusters_list(args: argparse.Namespace) -> None:
    import time

    from app.store import registrations as store
    from app.store.db import create_engine
    from app.store.migrate import upgrade

    settings = _cluster_settings(args)
    upgrade(settings.database_url)

    async def read() -> Any:
        engine = create_engine(settings.database_url)
        try:
            return await store.list_registrations(engine, time.time())
        finally:
            await engine.dispose()

    now = time.time()
    rows = asyncio.run(read())
    print(f"{'NAME':<24} {'LABELS':<32} {'TOKEN':<9} CERTIFICATE")
    for reg in rows:
        token = (
            "used"
            if reg.token_used_at is not None
            else ("expired" if reg.token_expires_at <= now else "pending")
            if reg.has_token
            else ("auto" if reg.auto else "-")
        )
        cert = (
            f"{reg.certificate.serial[:16]} until "
            + time.strftime("%Y-%m-%d %H:%M", time.gmtime(reg.certificate.not_after))
            if reg.certificate
            else "-"
        )
        labels = ",".join(f"{k}={v}" for k, v in reg.labels.items()) or "-"
        print(f"{reg.name:<24} {labels:<32} {token:<9} {cert}")


def run_clusters_remove(args: argparse.Namespace) -> None:
    from app.hub.cluster_admin import remove_cluster
    from app.store.db import create_engine
    from app.store.migrate import upgrade

    settings = _cluster_settings(args)
    upgrade(settings.database_url)

    async def remove() -> bool:
        engine = create_engine(settings.database_url)
        try:
            return await remove_cluster(engine, args.name, keep_inventory=args.keep_inventory)
        finally:
            await engine.dispose()

    try:
        removed = asyncio.run(remove())
    except ValueError as exc:
        sys.exit(f"clusters remove: {exc}")
    if not removed:
        sys.exit(f"clusters remove: {args.name} is not registered")
    print(
        f"cluster {args.name} unregistered and its certificates revoked; a running hub refuses "
        f"it within {settings.registry_refresh_s:g} s, "
        + ("keeps its inventory" if args.keep_inventory else "deletes its inventory")
        + " and has the broker refuse and disconnect it"
    )


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
        *PKI_FLAGS,
        ("--crl-file", "crl_file", str, "where the broker's CRL is written (TI_CRL_FILE)"),
        ("--broker-pid-file", "broker_pid_file", str, "SIGHUP after writing the CRL"),
        ("--agent-broker", "agent_broker_url", str, "broker URL handed to agents at join"),
    )
    hub.add_argument(
        "--accept-any-cluster",
        dest="accept_any_cluster",
        action="store_true",
        default=None,
        help="register a cluster on its first hello (development and benchmarks only)",
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
        ("--join", "join_url", str, "the hub's URL, to join with --token (TI_JOIN_URL)"),
        ("--token", "join_token", str, "one-time join token (TI_JOIN_TOKEN)"),
        ("--token-file", "join_token_file", str, "read the join token from this file"),
        ("--state-dir", "state_dir", str, "keeps the key and certificate (TI_STATE_DIR)"),
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
    demo.add_argument(
        "--insecure", action="store_true", help="plain MQTT and HTTP, no certificates (old mode)"
    )
    demo.set_defaults(func=run_demo)

    pki = sub.add_parser("pki", help="certificates for cluster identity")
    pki_sub = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_sub.add_parser("init", help="make a CA, the broker's and the hub's certificates")
    init.add_argument("--dir", required=True, help="directory to create them in")
    init.add_argument("--source", default=DEFAULT_SOURCE, help="the hub deployment name")
    init.add_argument(
        "--broker-host", default="localhost,127.0.0.1", help="names/IPs the broker is reached at"
    )
    init.add_argument(
        "--hub-host", default="localhost,127.0.0.1", help="names/IPs the hub is reached at"
    )
    init.set_defaults(func=run_pki_init)

    clusters = sub.add_parser("clusters", help="register and remove clusters")
    clusters_sub = clusters.add_subparsers(dest="clusters_command", required=True)
    db_flags = (
        ("--database-url", "database_url", str, "SQLAlchemy URL (TI_DATABASE_URL)"),
        ("--log-level", "log_level", str, "log level"),
    )
    add = clusters_sub.add_parser("add", help="register a cluster; prints its join command")
    add.add_argument("name")
    add.add_argument("--labels", default="", help="k=v,k2=v2 (the hub uses these, not the agent's)")
    add.add_argument("--token-ttl", type=float, default=None, help="seconds, default 3600")
    add.add_argument("--new-token", action="store_true", help="a new token for a registered one")
    add.add_argument("--exist-ok", action="store_true", help="registered already: do nothing")
    add.add_argument("--token-file", default=None, help="write the token here (0600)")
    add.add_argument(
        "--agent-state-dir", default="/var/lib/transport-informer", help="in the printed command"
    )
    _flags(
        add,
        *db_flags,
        *PKI_FLAGS,
        ("--hub-url", "public_url", str, "the hub's URL as agents reach it (TI_PUBLIC_URL)"),
    )
    add.set_defaults(func=run_clusters_add)
    ls = clusters_sub.add_parser("list", help="registered clusters")
    _flags(ls, *db_flags)
    ls.set_defaults(func=run_clusters_list)
    rm = clusters_sub.add_parser("remove", help="unregister, revoke and disconnect a cluster")
    rm.add_argument("name")
    rm.add_argument("--keep-inventory", action="store_true", help="keep its stored objects")
    _flags(rm, *db_flags)
    rm.set_defaults(func=run_clusters_remove)

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
