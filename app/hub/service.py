"""The hub service: everything one hub replica runs, owned by one async context manager.

Entering migrates the database, connects Redis (optional) and the broker, and starts the
ingest and maintenance loops in a task group; leaving cancels and awaits them and closes
every connection. Its parts are public attributes for the web layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import AsyncExitStack
from types import TracebackType

import orjson
from sqlalchemy import text

from app.config import HubSettings
from app.hub import maintenance
from app.hub.feed import ChangeFeed
from app.hub.heap import release_free_memory
from app.hub.hub_pki import HubPki
from app.hub.identity import ClusterIdentity
from app.hub.ingest import Ingest
from app.hub.outbox import Outbox
from app.hub.quota import ClusterQuota, OverQuota, QuotaSettings
from app.hub.registry import ClusterRegistry, InMemoryRegistry, RedisRegistry
from app.informer.objects import KindKey
from app.placement.dispatcher import Dispatcher
from app.store import queries
from app.store.db import analyze, checkpoint, create_engine
from app.store.migrate import upgrade_async
from app.store.writer import InventoryWriter
from app.transport import cloudevents, topics
from app.transport.cloudevents import MAX_MESSAGE_BYTES
from app.transport.messages import MessageType, resync_request_data
from app.transport.mqtt import LinkOptions, MqttLink

log = logging.getLogger(__name__)

ANALYZE_FIRST_S = 60.0
ANALYZE_EVERY_S = 600.0
"""Upkeep refreshes SQLite's planner statistics a minute after start, then every 10 min
(`store.db.analyze`): the fleet grows, and plans chosen for a small one go wrong."""
TRIM_EVERY_S = 30.0
"""How often upkeep hands the heap's free pages back to the OS (`heap.py`; ~25 ms)."""


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


class HubService:
    def __init__(self, settings: HubSettings, *, migrate: bool = True) -> None:
        self.settings = settings
        self._migrate = migrate
        # Readers give up on a lock after `read_lock_timeout_s` (PostgreSQL) and answer 503,
        # rather than hang behind a table someone locked.
        self.engine = create_engine(
            settings.database_url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            lock_timeout_s=settings.read_lock_timeout_s,
        )
        # Ingest writes through its own small pool: a burst of readers (200 browsers
        # reconnecting) must not leave the writer waiting for a pooled connection.
        self.write_engine = create_engine(
            settings.database_url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_size=2,
            max_overflow=0,
        )
        self.feed = ChangeFeed()
        self.registry: ClusterRegistry = (
            RedisRegistry.from_url(settings.redis_url, settings.replica_id)
            if settings.redis_url
            else InMemoryRegistry(settings.replica_id)
        )
        self.writer = InventoryWriter(self.write_engine)
        self.pki = HubPki.from_settings(settings)
        self.identity = ClusterIdentity(
            settings, engine=self.engine, writer=self.writer, feed=self.feed, pki=self.pki
        )
        quota = ClusterQuota(
            QuotaSettings(
                messages_per_s=settings.quota_messages_per_s,
                message_burst=settings.quota_message_burst,
                bytes_per_s=settings.quota_bytes_per_s,
                byte_burst=max(settings.quota_byte_burst, MAX_MESSAGE_BYTES),
                calm_s=settings.quota_calm_s,
            )
        )
        self.outbox = Outbox(self._publish)
        """Hub -> agent messages decided inside ingest (resync requests, answers to
        workload resyncs): ingest never waits on the broker."""
        self.dispatcher = Dispatcher(
            engine=self.engine,
            lock=self.writer.lock,
            publish=self._publish,
            answer=self.outbox.send,
            source=settings.source,
        )
        self.ingest = Ingest(
            source=settings.source,
            writer=self.writer,
            feed=self.feed,
            registry=self.registry,
            request_resync=self.request_resync,
            batch_max_events=settings.batch_max_events,
            heartbeat_linger_s=settings.heartbeat_linger_s,
            lease_heartbeats=settings.offline_after_heartbeats,
            on_workload_messages=self.dispatcher.on_agent_messages,
            quota=quota,
            max_queued_messages=settings.ingest_max_queued_messages,
            max_queued_bytes=settings.ingest_max_queued_bytes,
            registrations=self.identity.registrations,
        )
        # With PKI the broker takes the client id from the certificate's CN
        # (use_username_as_clientid); saying the same here keeps logs honest.
        self.link = MqttLink(
            LinkOptions(
                url=settings.broker_url,
                client_id=self.pki.name() if self.pki else f"ti-hub-{settings.replica_id}",
                subscriptions=(topics.all_agent_events(settings.source, settings.share_group),),
                manual_ack=True,
                receive_maximum=settings.receive_maximum,
                tls=self.pki.client_context() if self.pki else None,
            ),
            self.ingest.handle,
        )
        self.ingest.backpressure = self._backpressure
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> HubService:
        if self._migrate:
            await upgrade_async(self.settings.database_url)
        for cluster, kinds in (await queries.announced_kinds(self.engine)).items():
            self.ingest.announce(cluster, kinds)
        self.feed.labels.update(await queries.all_cluster_labels(self.engine))
        self.identity.warn_if_open()
        await self.identity.start(self.ingest)
        await self._stack.__aenter__()
        self._stack.push_async_callback(self.identity.close)
        self._stack.push_async_callback(self.engine.dispose)
        self._stack.push_async_callback(self.write_engine.dispose)
        self._stack.push_async_callback(self.registry.close)
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._stack.push_async_callback(self._cancel, tasks)
        # The loops start before the link so nothing the broker delivers waits on them.
        self._loops = [
            tasks.create_task(self.ingest.run()),
            tasks.create_task(self.outbox.run()),
            tasks.create_task(self._upkeep()),
            tasks.create_task(self._checkpoints()),
            tasks.create_task(self.dispatcher.run()),
            tasks.create_task(self.identity.run()),
        ]
        await self._stack.enter_async_context(self.link)
        return self

    async def _cancel(self, _tasks: asyncio.TaskGroup) -> None:
        for task in self._loops:
            task.cancel()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.__aexit__(et, e, tb)

    def _backpressure(self, paused: bool) -> None:
        if paused:
            log.warning(
                "ingest holds %d messages: not reading from the broker until it catches up",
                self.ingest.queued,
            )
            self.link.pause_reading()
        else:
            log.info("ingest caught up: reading from the broker again")
            self.link.resume_reading()

    async def _publish(self, topic: str, payload: bytes) -> None:
        await self.link.publish(topic, payload)

    async def request_resync(self, cluster: str, kinds: tuple[KindKey, ...]) -> None:
        event = cloudevents.CloudEvent(
            type=MessageType.RESYNC_REQUEST,
            source=self.settings.source,
            cluster=cluster,
            data=resync_request_data(kinds),
        )
        log.info("asking %s to relist %s", cluster, ", ".join(map(str, kinds)) or "everything")
        self.outbox.put(
            topics.source_events(self.settings.source, cluster), cloudevents.encode(event)
        )

    async def _upkeep(self) -> None:
        s = self.settings
        trimmed = time.monotonic()
        analyzed = time.monotonic() - ANALYZE_EVERY_S + ANALYZE_FIRST_S
        while True:
            await asyncio.sleep(s.maintenance_interval_s)
            if time.monotonic() - trimmed >= TRIM_EVERY_S:
                trimmed = time.monotonic()
                release_free_memory()
            if time.monotonic() - analyzed >= ANALYZE_EVERY_S:
                analyzed = time.monotonic()
                try:
                    await analyze(self.write_engine, self.writer.lock)
                except Exception as exc:
                    log.warning("ANALYZE failed (%s); trying again next period", exc)
            try:
                offline = await maintenance.run_once(
                    self.engine,
                    retain_changes=s.retain_changes,
                    tombstone_ttl_s=s.tombstone_ttl_s,
                    offline_after_heartbeats=s.offline_after_heartbeats,
                    retain_rejections=s.retain_rejections,
                    retain_audit=s.retain_audit,
                    lock=self.writer.lock,
                    ingest_lag_s=self.ingest.oldest_queued_s(),
                )
                if offline:
                    self.feed.publish(offline)
            except Exception:
                log.exception("maintenance failed; trying again next period")

    async def _checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            try:
                await checkpoint(self.engine)
            except Exception as exc:
                log.warning("WAL checkpoint failed (%s); trying again next period", exc)

    def over_quota(self) -> dict[str, OverQuota]:
        """Clusters over their ingest quota now, `since` as wall-clock time."""
        offset = time.time() - time.monotonic()
        return {
            o.cluster: dataclasses.replace(o, since=o.since + offset)
            for o in self.ingest.quota.over()
        }

    def ingest_ok(self) -> bool:
        """Ingest is committing: writes do not fail, and nothing waits past `stuck_after_s`."""
        health = self.ingest.health
        return (
            health.failing_since is None and self.ingest.stuck_for() < self.settings.stuck_after_s
        )

    async def database_ok(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False
