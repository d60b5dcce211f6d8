"""Settings, from flags or `TI_*` environment variables; built once in `main` and passed down."""

from __future__ import annotations

import re
import socket

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.transport.topics import DEFAULT_SOURCE


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TI_", extra="ignore")

    broker_url: str = "mqtt://127.0.0.1:1883"
    source: str = DEFAULT_SOURCE
    """The hub deployment's name in topics (sources/<source>/...)."""
    log_level: str = "INFO"


class HubSettings(CommonSettings):
    database_url: str = "sqlite:///./data/hub.db"
    redis_url: str | None = None
    host: str = "127.0.0.1"
    http_port: int = 8000
    replica_id: str = Field(default_factory=socket.gethostname)
    share_group: str | None = None
    """Subscribe through `$share/<group>/...` so several replicas split the clusters."""
    batch_max_events: int = 5000
    heartbeat_linger_s: float = 0.25
    """When only heartbeats wait, ingest waits up to this long for more before committing:
    10,000 clusters' heartbeats (2,000 a second) become a few transactions a second, not
    one each. Anything else ends the wait at once."""
    retain_changes: int = 200_000
    """How many change-log entries SSE clients can resume from."""
    tombstone_ttl_s: float = 600.0
    maintenance_interval_s: float = 5.0
    checkpoint_interval_s: float = 1.0
    """SQLite only: how often the write-ahead log is checkpointed, off the commit path."""
    offline_after_heartbeats: float = 3.0
    receive_maximum: int = 65535
    """Unacknowledged messages the broker may send the hub at once (MQTT 5 receive-maximum).
    High on purpose: mosquitto 2.0.11 reorders one publisher's messages once it has to queue
    them behind a full window; the hub bounds its intake itself (`ingest_max_queued_*`)."""
    ingest_max_queued_messages: int = 20_000
    ingest_max_queued_bytes: int = 256 * 1024 * 1024
    """Received, uncommitted messages the hub holds before it stops reading from the broker."""
    quota_messages_per_s: float = 1000.0
    """Per cluster: messages a second the hub takes; beyond it (and the burst) they are
    dropped unparsed and the cluster relists once calm (`app/hub/quota.py`)."""
    quota_message_burst: float = 1000.0
    quota_bytes_per_s: float = 4 * 1024 * 1024
    quota_byte_burst: float = 16 * 1024 * 1024
    quota_calm_s: float = 5.0
    stuck_after_s: float = 10.0
    """Ingest holding messages without a commit this long makes /readyz fail."""
    retain_rejections: int = 10_000
    """Dead-letter records kept (`GET /rejections`)."""
    read_lock_timeout_s: float = 2.0
    """PostgreSQL: how long a read waits for a lock before the request is answered 503."""
    dashboard_group_labels: str = "env,region"
    """Cluster label keys the fleet overview counts clusters by (comma-separated, at most
    8): its summary lists each key's most common values with their clusters and offline."""

    # -- HTTP access control (docs/security.md, "HTTP access control") --------------------
    bootstrap_token: SecretStr | None = None
    """An admin token given by configuration rather than `tokens create` (at least 32
    characters): for automation that starts a hub and must call it at once. Unset: none."""
    allowed_hosts: str = "127.0.0.1,localhost,::1"
    """Host header values the hub answers (comma-separated; `*.example.com` matches
    subdomains, `*` anything). Others get 400: DNS rebinding cannot reach the API."""
    session_ttl_s: float = 12 * 3600
    """A dashboard sign-in lasts this long (and never past its token's expiry)."""
    cookie_secure: bool | None = None
    """Mark the session cookie Secure: unset means when the request came over https
    (directly, or from a trusted proxy saying X-Forwarded-Proto: https)."""
    trusted_origins: str = ""
    """Extra origins (`https://hub.example.com`) allowed to post to the dashboard, when a
    proxy changes the Host header; the request's own host is always allowed."""
    auth_proxy_user_header: str | None = None
    """Auth-proxy mode (Grafana's auth.proxy): the header holding the signed-in user, e.g.
    X-Forwarded-User. Trusted only from `auth_proxy_addresses`. Unset: off."""
    auth_proxy_groups_header: str = "X-Forwarded-Groups"
    auth_proxy_addresses: str = ""
    """Proxy addresses (IPs or CIDRs, comma-separated) whose user header is trusted; also
    the peers whose X-Forwarded-For / X-Forwarded-Proto the hub believes."""
    auth_proxy_groups: dict[str, str] = Field(default_factory=dict)
    """Group -> `role` or `role:selector`, as JSON: {"ops": "admin", "dev-team":
    "operator:env=dev"}. A user gets the highest role among their groups."""
    auth_proxy_default_role: str | None = None
    """The role of a proxy user in no mapped group; unset: such users are refused (403)."""
    metrics_public: bool = False
    """Serve /metrics without a token (for a scraper on a private network); by default it
    needs an unscoped token of any role."""
    admission_admin_kinds: str = ""
    """Kinds only admins may deploy, beyond RBAC and cluster-scoped kinds: `Secret`,
    `DaemonSet.apps` (comma-separated)."""
    admission_protected_namespaces: str = "kube-system,kube-public,kube-node-lease"
    retain_audit: int = 100_000
    """Audit entries kept."""
    max_body_bytes: int = 1024 * 1024
    """Request bodies larger than this are refused with 413."""
    sse_max_streams: int = 500
    """Open event streams (API and dashboard) the hub serves at once; more get 429."""
    sse_max_streams_per_principal: int = 50
    """Open event streams of one token, session user or proxy user."""
    # -- cluster identity (docs/security.md) ---------------------------------------------
    pki_dir: str | None = None
    """A directory made by `transport-informer pki init`. With it (or `cert_file`) the hub
    connects to the broker with mTLS, serves HTTPS, signs cluster certificates and refuses
    clusters that are not registered. Without either: insecure mode (plain MQTT and HTTP,
    any cluster accepted), for development and benchmarks only."""
    ca_file: str | None = None
    """Trust anchors (PEM) for the broker's and the agents' certificates; handed to agents
    at join. Default `<pki_dir>/ca.crt`."""
    cert_file: str | None = None
    """The hub's certificate (client for MQTT, server for HTTPS). Default `<pki_dir>/hub.crt`."""
    key_file: str | None = None
    signer_cert_file: str | None = None
    """The CA (or an intermediate) that signs cluster certificates and the CRL. Default
    `<pki_dir>/ca.crt`."""
    signer_key_file: str | None = None
    crl_file: str | None = None
    """Where the hub writes the CRL the broker reads (`crlfile`). Default `<pki_dir>/crl.pem`."""
    broker_pid_file: str | None = None
    """The broker's pid file: the hub sends SIGHUP after writing the CRL, so mosquitto
    reloads it. Unset: revocation waits for someone to reload the broker (logged)."""
    public_url: str | None = None
    """The hub's URL as agents reach it (`--join`), printed in join commands. Default: the
    URL the dashboard was reached at, or https://<host>:<port>."""
    agent_broker_url: str | None = None
    """The broker URL handed to agents at join. Default `broker_url`."""
    accept_any_cluster: bool = False
    """Register a cluster on its first hello (development, benchmarks). Implied without PKI."""
    cert_lifetime_s: float = 30 * 24 * 3600.0
    """Lifetime of the cluster certificates the hub signs; agents renew at 2/3 of it."""
    join_token_ttl_s: float = 3600.0
    registry_refresh_s: float = 2.0
    """How often the hub looks for removals, and at most how often an unknown cluster makes
    it re-read the registrations (`clusters add` and `remove` may come from the CLI)."""


class AgentSettings(CommonSettings):
    broker_url: str | None = None  # type: ignore[assignment]
    """Unset: the broker the hub named at join (state dir), else mqtt://127.0.0.1:1883."""
    cluster: str = "dev-1"
    labels: str = ""
    """`k=v,k2=v2`."""
    source_kind: str = Field(default="sim", alias="TI_SOURCE_KIND")
    kinds: str = "v1/Node,v1/ConfigMap,v1/Service,apps/v1/Deployment,v1/Pod"
    kubeconfig: str | None = None
    sim_objects: int = 300
    sim_churn: float = 5.0
    sim_seed: int | None = None
    heartbeat_s: float = 5.0
    resync_s: float = 30.0
    """How often the agent sends per-kind digests so the hub can find and repair drift."""
    max_pending: int = 200_000
    """Distinct objects the agent buffers while the broker is away; past that it forgets the
    buffer and relists everything on reconnect."""
    chunk_bytes: int = 128 * 1024
    max_inflight: int = 16
    send_messages_per_s: float = 500.0
    send_bytes_per_s: float = 3 * 1024 * 1024
    """The agent paces itself below the hub's default per-cluster quota (1000 messages/s,
    4 MiB/s), so it is never cut off for its own traffic."""
    join_url: str | None = None
    """The hub's URL (`--join https://HUB`): with a token, the agent joins; see `state_dir`."""
    join_token: str | None = None
    join_token_file: str | None = None
    state_dir: str | None = None
    """Where the agent keeps its key, certificate, CA bundle and broker URL. With an
    identity in it the agent connects with mTLS and needs no token again."""
    debug_truth_port: int | None = None
    """Sim source only, a debugging aid: serve the simulated cluster's state (every object's
    uid and resourceVersion) as JSON at `GET /truth` on 127.0.0.1:<port>. Off when unset."""

    model_config = SettingsConfigDict(env_prefix="TI_", extra="ignore", populate_by_name=True)


def parse_labels(text: str) -> dict[str, str]:
    """`env=prod,region=eu` -> {"env": "prod", "region": "eu"}; ValueError if malformed."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"labels must look like k=v,k2=v2, got {part!r}")
        labels[key.strip()] = value.strip()
    return labels


MAX_LABELS = 64
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    """`labels` if they are Kubernetes-style labels (at most 64; keys `[prefix/]name`,
    values up to 63 characters), else ValueError saying which is not."""
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if len(key) > 317 or not _LABEL_KEY.match(key):
            raise ValueError(f"label key {key[:80]!r} is not a valid Kubernetes label key")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"label value {value[:80]!r} (of {key!r}) is not a valid label value")
    return labels
