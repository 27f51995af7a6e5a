"""The composition root: picks the concrete classes and wires the pipeline stages together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from service import __version__
from service.api.auth import TokenTable
from service.api.health import FATAL, METRICS, READINESS, Readiness, add_routes
from service.api.http import DESTINATION_CONTEXT, RUNS, STORE, TOKENS, api_middleware
from service.api.openapi import build_openapi
from service.api.routes import add_api_routes
from service.api.webhooks import DBT_SECRET
from service.config import Settings
from service.core.interfaces import RunRequest, SystemClock
from service.core.metrics import Metrics
from service.core.models import RunStatus, Sync, SyncRun
from service.core.rows import RouteIndex
from service.destinations.registry import DestinationContext, open_destination
from service.ingest import Ingest, PreparedPart
from service.resources import ResourcesFile, apply_resources
from service.router import build_routes
from service.runner.retry import RetryPolicy
from service.runner.runner import SyncRunner
from service.scheduler import Scheduler
from service.source.invalid_rate import InvalidRateMonitor
from service.source.kafka import EventBatch, KafkaSource
from service.status import StatusReporter
from service.store.base import RunQuery, Store
from service.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

T = TypeVar("T")

CATALOG_POLL_SECONDS = 1.0
GAUGE_POLL_SECONDS = 5.0


def open_store(settings: Settings) -> Store:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore  # only PostgreSQL users need asyncpg

        return PostgresStore(settings.database_url)
    return SqliteStore(settings.database_url)


@dataclass(slots=True)
class Pipeline:
    """The running pipeline: source -> router -> ingest -> scheduler -> runner -> status."""

    settings: Settings
    store: Store
    source: KafkaSource
    ingest: Ingest
    scheduler: Scheduler
    reporter: StatusReporter
    metrics: Metrics
    routes: RouteIndex
    catalog_version: int = -1
    stopping: bool = False
    reported_snapshots: set[tuple[str, str]] = field(default_factory=set)

    async def refresh_catalog(self) -> None:
        version = await self.store.catalog_version()
        if version == self.catalog_version:
            return
        syncs = await self.store.list_syncs()
        sources = await self.store.list_sources()
        self.routes = build_routes(syncs)
        self.scheduler.set_syncs(syncs)
        topics = set(self.settings.events_topics)
        topics.update(
            str(s.configuration["topic"]) for s in sources if s.configuration.get("topic")
        )
        self.source.subscribe(topics)
        self.catalog_version = version

    async def consume(self) -> None:
        """Fetch, store as pending, then commit: offsets cover only what is durable. While one
        batch is being stored, the next is fetched, decoded and projected; batches are stored
        and committed one after another, in order."""
        storing: asyncio.Task[bool] | None = None
        try:
            while not self.stopping:
                batch = await self.source.fetch(timeout_ms=500)
                if not batch.records:
                    continue
                parts = await self._retrying(
                    "preparing", batch, functools.partial(self._prepare, batch)
                )
                if storing is not None and not await storing:
                    return  # stopping before the last batch was stored: nothing after it either
                if parts is None:
                    return  # stopping: uncommitted, these events are read again
                storing = asyncio.create_task(self._ingest(batch, parts), name="ingest")
            if storing is not None:
                await storing
        finally:
            if storing is not None and not storing.done():
                storing.cancel()  # uncommitted: these events are read again

    async def _prepare(self, batch: EventBatch) -> list[PreparedPart]:
        # A sync created a moment ago gets every event fetched after its creation.
        await self.refresh_catalog()
        return self.ingest.prepare(batch.events, self.routes)

    async def _ingest(self, batch: EventBatch, parts: list[PreparedPart]) -> bool:
        """Store, then commit the batch's offsets; False if the service stopped first."""
        result = await self._retrying("storing", batch, lambda: self.ingest.store(parts))
        if result is None:
            return False
        await self.source.commit(batch.offsets)
        self.scheduler.notify_pending(result.sync_ids)
        return True

    async def _retrying(
        self, what: str, batch: EventBatch, step: Callable[[], Awaitable[T]]
    ) -> T | None:
        """Never move past a batch that is not stored: retry the step with backoff, or give up
        uncommitted (None) once the service is stopping."""
        delay = 0.5
        while True:
            try:
                return await step()
            except Exception:
                log.exception(
                    "%s %d events failed; retrying in %.1fs", what, len(batch.events), delay
                )
                if self.stopping:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _watch_snapshots(self) -> None:
        snapshots = await self.store.open_snapshots()
        limit = self.settings.snapshot_warn_seconds
        stale = [(s, n, at) for s, n, at in snapshots if time.time() - at > limit]
        self.metrics.open_snapshots.set(len(snapshots))
        self.metrics.stale_snapshots.set(len(stale))
        for sync_id, snapshot_id, opened_at in stale:
            if (sync_id, snapshot_id) not in self.reported_snapshots:
                self.reported_snapshots.add((sync_id, snapshot_id))
                log.warning(
                    "sync %s: snapshot %r open for %.0f s without its last: true event; "
                    "until it closes it removes nothing",
                    sync_id,
                    snapshot_id,
                    time.time() - opened_at,
                )

    async def watch(self) -> None:
        """Catalog changes and the pending-rows gauge."""
        since_gauge = GAUGE_POLL_SECONDS
        while not self.stopping:
            try:
                await self.refresh_catalog()
                if since_gauge >= GAUGE_POLL_SECONDS:
                    counts = await self.store.pending_counts()
                    self.metrics.pending_rows.set(sum(counts.values()))
                    failed = await self.store.failed_counts()
                    self.metrics.failed_rows.set(sum(failed.values()))
                    await self._watch_snapshots()
                    since_gauge = 0.0
            except Exception:
                log.exception("catalog refresh failed")
            await asyncio.sleep(CATALOG_POLL_SECONDS)
            since_gauge += CATALOG_POLL_SECONDS


class PipelineRunControl:
    """RunControl for the API: runs are queued in the scheduler, recorded by the reporter."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self._lock = asyncio.Lock()

    def _running(self) -> Pipeline:
        if self.pipeline is None:
            raise RuntimeError("the pipeline is not running")
        return self.pipeline

    async def trigger(self, sync: Sync, *, full_resync: bool, reset_cdc: bool = False) -> str:
        pipeline = self._running()
        async with self._lock:
            if not pipeline.scheduler.knows(sync.id):
                await pipeline.refresh_catalog()  # created a moment ago
            queued = pipeline.scheduler.queued_trigger(sync.id)
            if queued is not None and queued.run_id is not None:
                queued.full_resync |= full_resync
                queued.reset_cdc |= reset_cdc
                return queued.run_id
            run = SyncRun(
                id=await pipeline.store.next_run_id(), sync_id=sync.id, full_resync=full_resync
            )
            await pipeline.reporter.report(sync, run)
            request = RunRequest(
                "trigger",
                requested_at=run.created_at,
                run_id=run.id,
                full_resync=full_resync,
                reset_cdc=reset_cdc,
            )
            pipeline.scheduler.trigger(sync.id, request)
            return run.id

    async def cancel(self, sync: Sync, run_id: str) -> bool:
        pipeline = self._running()
        async with self._lock:
            outcome = pipeline.scheduler.cancel(sync.id, run_id)
            if outcome != "queued":
                return outcome == "running"
            runs, _ = await pipeline.store.list_runs(RunQuery(sync.id, run_id=run_id, limit=1))
            if runs:
                run = runs[0]
                run.status = RunStatus.CANCELLED
                run.finished_at = datetime.now(UTC)
                run.error = "cancelled through the API before it started"
                await pipeline.reporter.report(sync, run)
            return True


class KafkaUnavailable(Exception):
    """The cluster did not answer within SYNC_KAFKA_CONNECT_TIMEOUT_SECONDS at start."""


async def connect_kafka(settings: Settings, start: Callable[[], Awaitable[None]]) -> None:
    """Retry `start` with backoff while the cluster is unreachable (it may still be booting)."""
    deadline = asyncio.get_running_loop().time() + settings.kafka_connect_timeout_seconds
    delay = 0.5
    while True:
        try:
            await start()
            return
        except KafkaConnectionError as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise KafkaUnavailable(
                    f"Kafka at {settings.kafka_bootstrap_servers} did not answer within "
                    f"{settings.kafka_connect_timeout_seconds:.0f}s "
                    "(SYNC_KAFKA_BOOTSTRAP_SERVERS, SYNC_KAFKA_CONNECT_TIMEOUT_SECONDS)"
                ) from exc
            log.warning("Kafka not reachable yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def ensure_topics(settings: Settings) -> None:
    """Create the topics the service uses when the broker allows it; existing ones are kept."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await connect_kafka(settings, admin.start)
    try:
        existing = set(await admin.list_topics())
        names = {*settings.events_topics, settings.status_topic, settings.dlq_topic}
        missing = [
            NewTopic(
                n,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
            )
            for n in names - existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    except KafkaError as exc:
        log.warning("could not create topics (%s); they must exist already", exc)
    finally:
        await admin.close()


def build_app(
    settings: Settings,
    resources: ResourcesFile | None = None,
    tokens: dict[str, str] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.api_max_body_bytes, middlewares=[api_middleware])
    metrics = Metrics()
    store = open_store(settings)
    run_control = PipelineRunControl()
    app[METRICS] = metrics
    app[READINESS] = readiness = Readiness()
    app[FATAL] = fatal = asyncio.Event()
    app[STORE] = store
    app[TOKENS] = TokenTable(tokens or {})
    app[RUNS] = run_control
    app[DESTINATION_CONTEXT] = DestinationContext(settings.kafka_bootstrap_servers)
    if settings.dbt_cloud_webhook_secret is not None:
        app[DBT_SECRET] = settings.dbt_cloud_webhook_secret
    add_routes(app)
    add_api_routes(app, lambda: build_openapi(__version__))
    if not tokens:
        log.warning("no API tokens configured (SYNC_API_TOKENS): the API refuses every request")

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        clock = SystemClock()
        await store.open()
        stack = contextlib.AsyncExitStack()
        stack.push_async_callback(store.close)
        async with stack:
            if resources is not None:
                assert settings.config_file is not None
                await apply_resources(store, resources, settings.config_file)
            await ensure_topics(settings)
            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                enable_idempotence=True,
                acks="all",
                linger_ms=5,
            )
            await connect_kafka(settings, producer.start)
            stack.push_async_callback(producer.stop)
            consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                group_id=settings.consumer_group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                metadata_max_age_ms=5000,
            )
            source = KafkaSource(
                consumer,
                producer,
                settings.dlq_topic,
                metrics,
                settings.fetch_max_records,
                InvalidRateMonitor(settings.dlq_alert_ratio, settings.dlq_alert_window),
            )
            reporter = StatusReporter(store, producer, settings.status_topic, metrics)
            context = app[DESTINATION_CONTEXT]
            runner = SyncRunner(
                store,
                functools.partial(open_destination, context=context),
                reporter,
                metrics,
                clock,
                RetryPolicy(
                    max_attempts=settings.destination_max_attempts,
                    base_delay=settings.destination_retry_base_seconds,
                    max_delay=settings.destination_retry_max_seconds,
                ),
            )
            stack.push_async_callback(runner.close)
            scheduler = Scheduler(
                runner,
                clock,
                max_concurrent_runs=settings.max_concurrent_runs,
                retry_base=settings.failed_rows_retry_seconds,
            )
            pipeline = Pipeline(
                settings, store, source, Ingest(store, metrics), scheduler, reporter, metrics, {}
            )
            await pipeline.refresh_catalog()
            run_control.pipeline = pipeline
            await connect_kafka(settings, consumer.start)
            stack.push_async_callback(consumer.stop)
            scheduler.notify_pending((await store.pending_counts()).keys())

            async def consumer_joined() -> bool:
                return source.joined

            readiness.add("store", store.ping)
            readiness.add("consumer", consumer_joined)
            consume = asyncio.create_task(pipeline.consume(), name="consume")
            watch = asyncio.create_task(pipeline.watch(), name="catalog-watch")

            def on_consume_done(task: asyncio.Task[None]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    log.error("the consumer stopped", exc_info=task.exception())
                    fatal.set()

            consume.add_done_callback(on_consume_done)
            log.info("sync-service started: consuming %s", ", ".join(settings.events_topics))
            try:
                yield
            finally:
                pipeline.stopping = True
                watch.cancel()
                # The consume loop ends after its current fetch (at most 0.5 s) and commit.
                try:
                    await asyncio.wait_for(asyncio.shield(consume), timeout=3)
                except TimeoutError:
                    consume.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consume
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                await scheduler.stop(settings.shutdown_grace_seconds)
                log.info("sync-service stopped")

    app.cleanup_ctx.append(pipeline_ctx)
    return app
