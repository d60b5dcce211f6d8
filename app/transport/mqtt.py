"""One MQTT 5 connection with the guarantees the protocol relies on.

- Persistent session: a stable client id, clean start off and a session expiry, so QoS 1
  messages queued while either side was away are delivered when it comes back.
- Flow control: at most `max_inflight` unacknowledged QoS 1 publishes (gmqtt itself never
  blocks and raises OverflowError past the broker's receive-maximum); `publish` waits.
- Manual acknowledgement (optional): an inbound message is acked only after its handler
  returns, so a handler that persists before returning gives ack-after-commit. A handler
  that raises sends no ack; the broker redelivers on the next connection.
- Reconnect with exponential backoff and full jitter, forever, until the link is closed.
  Subscriptions are (re)made on every connect.
- TLS: `mqtts://` with the system's trust store, or `LinkOptions.tls`, a context carrying
  the client certificate (mTLS). `renew` swaps that certificate and reconnects cleanly
  (DISCONNECT, so no last will) under the same client id: the persistent session goes on.
- Backpressure on the receiving side: `pause_reading` stops reading the socket (TCP flow
  control) until `resume_reading`, across reconnects. A consumer must not rely on the
  broker honouring its receive-maximum: mosquitto 2.0.11 (Debian 12) does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from gmqtt import Client, Message
from gmqtt.storage import PersistentStorage

from app.backoff import backoff_delay

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
QOS = 1


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkOptions:
    url: str
    client_id: str
    subscriptions: tuple[str, ...] = ()
    will: Will | None = None
    session_expiry_s: int = 24 * 3600
    keepalive_s: int = 30
    max_inflight: int = 16
    """Below mosquitto's default receive-maximum of 20."""
    receive_maximum: int = 200
    manual_ack: bool = False
    connect_timeout_s: float = 10.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 15.0
    tls: ssl.SSLContext | None = None
    """For `mqtts://`: the context to use (mTLS); None means the system's trust store."""


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker URL must look like mqtt://host:port, got {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, parts.port or (8883 if tls else 1883), tls


class InflightWindow(PersistentStorage):  # type: ignore[misc]
    """gmqtt's store of unacked publishes, which also lets publishers wait for room.

    gmqtt calls `remove_message_by_mid` from its packet handler, on the event loop's thread.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self._room = asyncio.Event()
        self._room.set()

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        if len(self) >= self.limit:
            self._room.clear()

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        if len(self) < self.limit:
            self._room.set()

    def clear(self) -> None:
        super().clear()
        self._room.set()

    def __len__(self) -> int:
        return len(self._messages)

    def __bool__(self) -> bool:
        return True  # gmqtt does `persistent_storage or PersistentStorage()`

    async def wait_for_room(self) -> None:
        while len(self) >= self.limit:
            self._room.clear()
            await self._room.wait()


class _BackoffClient(Client):  # type: ignore[misc]
    """gmqtt's client, reconnecting with jittered exponential backoff instead of a fixed delay.

    The backoff grows with every reconnect that did not reach a CONNACK (`attempt`, reset by
    the link on connect), not only with TCP failures: a broker that refuses the client's
    certificate does so after the TCP (and, with TLS 1.3, the client's TLS) handshake,
    which gmqtt counts as a success."""

    backoff_base_s = 0.2
    backoff_cap_s = 15.0
    attempt = 0
    stopping: asyncio.Event | None = None
    """Set by the link when it closes: a reconnect waiting out its backoff returns at once
    (rather than being cancelled later, which gmqtt reports as an error)."""

    async def reconnect(self, delay: bool = False) -> None:
        if not self._is_active:  # closed on purpose: no reconnect, no sleep to cancel
            return
        if delay:
            attempt = max(self._connection_state.failed_connections, self.attempt)
            self.attempt += 1
            if self.stopping is None:
                self.stopping = asyncio.Event()
            pause = backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)
            if self.stopping.is_set() or not self._is_active:
                return
        await super().reconnect(delay=False)


class _QuietGmqtt(logging.Filter):
    """gmqtt logs every lost connection with a traceback, and every write after it; the link
    logs losses itself. A certificate the broker refuses (revoked: the cluster was removed;
    expired; another CA) becomes one plain line a minute instead."""

    def __init__(self) -> None:
        super().__init__()
        self._said: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message == "[TRYING WRITE TO CLOSED SOCKET]":
            return False
        if message != "[EXC: CONN LOST]":
            return True
        exc = record.exc_info[1] if record.exc_info else None
        reason = getattr(exc, "reason", None) or ""
        if isinstance(exc, ssl.SSLError) and "CERTIFICATE" in reason:
            now = time.monotonic()
            if now - self._said.get(reason, -60.0) >= 60.0:
                self._said[reason] = now
                log.error(
                    "the broker refused this client's certificate (%s): a removed cluster, an "
                    "expired certificate, or one from another CA; retrying with backoff",
                    reason,
                )
        return False


def _quiet_gmqtt() -> None:
    protocol_log = logging.getLogger("gmqtt.mqtt.protocol")
    if not any(isinstance(f, _QuietGmqtt) for f in protocol_log.filters):
        protocol_log.addFilter(_QuietGmqtt())


@dataclass
class _State:
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    connects: int = 0


class MqttLink:
    """An async context manager owning one gmqtt client and its connect loop.

    Entering returns at once; the first connection is made in the background (an agent must
    start, and buffer, while the broker is down). `connected` tells whether it is up now.
    """

    def __init__(self, options: LinkOptions, on_message: MessageHandler | None = None) -> None:
        self.options = options
        self._on_message = on_message
        _quiet_gmqtt()
        self._host, self._port, self._tls = parse_broker_url(options.url)
        if options.tls is not None and not self._tls:
            raise ValueError(f"a TLS context needs an mqtts:// broker URL, got {options.url!r}")
        self._ssl: ssl.SSLContext | bool = options.tls or self._tls
        self._open = asyncio.Event()
        """Clear while `renew` drains and reconnects: publishes wait."""
        self._open.set()
        self._renewing = False
        self._window = InflightWindow(options.max_inflight)
        self._state = _State()
        self._connector: asyncio.Task[None] | None = None
        self.on_connect: Callable[[], None] | None = None
        """Called after every (re)connect, once subscriptions are requested."""
        self._client = self._build_client()
        self._paused = False
        self._keeper: asyncio.Task[None] | None = None

    def _build_client(self) -> Any:
        opts = self.options
        will = None
        if opts.will:
            will = Message(opts.will.topic, opts.will.payload, qos=QOS, will_delay_interval=0)
        client = _BackoffClient(
            opts.client_id,
            clean_session=False,
            optimistic_acknowledgement=not opts.manual_ack,
            will_message=will,
            persistent_storage=self._window,
            session_expiry_interval=opts.session_expiry_s,
            receive_maximum=opts.receive_maximum,
            logger=logging.getLogger("gmqtt"),
        )
        client.backoff_base_s = opts.backoff_base_s
        client.backoff_cap_s = opts.backoff_cap_s
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        return client

    @property
    def connected(self) -> bool:
        return self._state.connected.is_set()

    @property
    def connects(self) -> int:
        """How many times the link has connected; a change means a new connection."""
        return self._state.connects

    @property
    def inflight(self) -> int:
        return len(self._window)

    async def wait_connected(self) -> None:
        await self._state.connected.wait()

    async def __aenter__(self) -> MqttLink:
        self._connector = asyncio.ensure_future(self._connect_forever())
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def reading_paused(self) -> bool:
        return self._paused

    def pause_reading(self) -> None:
        """Stop reading from the broker until `resume_reading` (kept across reconnects).
        Writes (acks, pings, publishes) go on; the link's own keepalive check, which
        counts bytes read, is told the silence is ours."""
        if self._paused:
            return
        self._paused = True
        self._apply_pause()
        self._keeper = asyncio.ensure_future(self._keep_alive_while_paused())

    def resume_reading(self) -> None:
        if not self._paused:
            return
        self._paused = False
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        self._apply_pause()

    def _apply_pause(self) -> None:
        transport = getattr(self._client._connection, "_transport", None)
        if transport is not None and not transport.is_closing():
            (transport.pause_reading if self._paused else transport.resume_reading)()

    async def _keep_alive_while_paused(self) -> None:
        while True:
            connection = self._client._connection
            if connection is not None:
                connection._last_data_in = time.monotonic()
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._state.closed:
            return
        self._state.closed = True
        if self._client.stopping is None:
            self._client.stopping = asyncio.Event()
        self._client.stopping.set()
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._connector:
            self._connector.cancel()
            await asyncio.gather(self._connector, return_exceptions=True)
        try:
            await asyncio.wait_for(self._client.disconnect(), 5)
        except Exception as exc:  # closing anyway; the session stays on the broker
            log.debug("disconnect from %s failed: %s", self.options.url, exc)
        self._state.connected.clear()

    async def _connect_forever(self) -> None:
        attempt = 0
        while not self._state.closed:
            try:
                await asyncio.wait_for(
                    self._client.connect(
                        self._host, self._port, ssl=self._ssl, keepalive=self.options.keepalive_s
                    ),
                    self.options.connect_timeout_s,
                )
                return  # from now on gmqtt reconnects (through _BackoffClient.reconnect)
            except (OSError, TimeoutError) as exc:
                delay = backoff_delay(
                    attempt, self.options.backoff_base_s, self.options.backoff_cap_s
                )
                attempt += 1
                log.warning(
                    "cannot reach MQTT broker %s (%s); retrying in %.1fs",
                    self.options.url,
                    exc or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    def _handle_connect(self, client: Any, flags: int, rc: int, properties: Any) -> None:
        for topic in self.options.subscriptions:
            client.subscribe(topic, qos=QOS)
        self._state.connects += 1
        self._client.attempt = 0
        self._state.connected.set()
        if self._paused:
            self._apply_pause()  # a new connection, a new transport
        log.info("connected to %s as %s", self.options.url, self.options.client_id)
        if self.on_connect:
            self.on_connect()

    def _handle_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self._state.connected.is_set() and not self._state.closed and not self._renewing:
            log.warning("lost MQTT connection to %s", self.options.url)
        self._state.connected.clear()

    async def _handle_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        if self._on_message is not None:
            await self._on_message(topic, payload)
        return 0  # PUBACK reason code: success

    async def renew(self, cert_file: str, drain_s: float = 10.0) -> None:
        """Present the certificate (and key) in `cert_file` from now on, and reconnect with it.

        New publishes wait; those in flight get up to `drain_s` to be acknowledged, so none is
        sent twice (any left over is resent on the new connection, which the hub takes as a
        harmless duplicate). The DISCONNECT is a clean one: the broker keeps the session and
        does not publish the last will. If the new connection fails, the link retries it with
        its usual backoff, as after any lost connection."""
        if not isinstance(self._ssl, ssl.SSLContext):
            raise RuntimeError("renew needs a link made with a TLS context")
        self._ssl.load_cert_chain(cert_file)
        self._open.clear()
        self._renewing = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._window.wait_empty(), drain_s)
            # gmqtt's own reconnect() races its connection-lost handler, which schedules a
            # second reconnect: two connections with one client id then take each other's
            # session over in a loop. A disconnect (which stops its reconnects) and a new
            # connect loop do not.
            self._state.connected.clear()
            with contextlib.suppress(Exception):  # closing anyway; the session stays
                await asyncio.wait_for(self._client.disconnect(), 5)
            if self._connector is not None and not self._connector.done():
                self._connector.cancel()
                await asyncio.gather(self._connector, return_exceptions=True)
            self._connector = asyncio.ensure_future(self._connect_forever())
        finally:
            self._renewing = False
            self._open.set()

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 once connected and the in-flight window has room."""
        while True:
            await self._open.wait()
            await self._state.connected.wait()
            await self._window.wait_for_room()
            if self.connected and self._open.is_set():
                self._client.publish(topic, payload, qos=QOS)
                return

    async def flush(self) -> None:
        """Wait until every publish so far is acknowledged by the broker."""
        await self._window.wait_empty()
