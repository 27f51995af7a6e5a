"""The composition root: picks the concrete classes, wires the pipeline stages together and runs
their lifecycles. HTTP answers from the first moment; the pipeline starts behind it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from service import __version__
from service.api.auth import TokenTable
from service.api.health import EXIT_REASON, FATAL, METRICS, READINESS, ExitReason, Readiness
from service.api.health import add_routes as add_health_routes
from service.api.http import CATALOG, DESTINATION_CONTEXT, RUNS, STORE, TOKENS, api_middleware
from service.api.openapi import build_openapi
from service.api.routes import add_api_routes
from service.api.webhooks import DBT_SECRET
from service.catalog import Catalog
from service.config import Settings
from service.core.interfaces import SystemClock
from service.core.metrics import Metrics
from service.destinations.egress import EgressPolicy
from service.destinations.registry import (
    DestinationContext,
    check_destination,
    open_destination,
)
from service.ingest import Ingest
from service.pipeline.catalog import CatalogView, SyncSets
from service.pipeline.consume import Backoff, ConsumeLoop
from service.pipeline.control import PipelineRunControl, RunRequests
from service.pipeline.health import ConsumerHealth
from service.pipeline.watch import Upkeep, Watcher
from service.resources import ResourcesError, ResourcesFile, apply_resources
from service.runner.retry import RetryPolicy
from service.runner.runner import SyncRunner
from service.runner.stream import WARM_BEFORE_JOIN_SECONDS, Streams
from service.scheduler import Scheduler
from service.source.debezium import DebeziumSources
from service.source.dlq import MAX_LETTER_BYTES, DeadLetters
from service.source.invalid_rate import InvalidRateMonitor
from service.source.kafka import KafkaSource
from service.status import StatusReporter
from service.store.base import Store, StoreUnavailable
from service.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

#: How long a stopping service lets an unfinished start-up end by itself.
START_STOP_SECONDS = 5.0

#: Exit status of a start-up that can't succeed without an operator (configuration, schema).
EXIT_CONFIG = 2
#: How often a start with SYNC_MIGRATE_ON_START off looks again at a schema that is behind.
SCHEMA_WAIT_SECONDS = 5.0


def open_store(settings: Settings) -> Store:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore  # only PostgreSQL users need asyncpg

        return PostgresStore(settings.database_url, timeout=settings.store_timeout_seconds)
    return SqliteStore(settings.database_url, timeout=settings.store_timeout_seconds)


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """What every Kafka client of the service's own (consumer, producer, admin) is given to
    reach the cluster: its address and security. Reads the CA file: call it off the loop."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        cafile = settings.kafka_ssl_cafile
        options["ssl_context"] = create_ssl_context(
            cafile=str(cafile) if cafile is not None else None
        )
    if protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by the settings
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


class KafkaUnavailable(Exception):
    """The cluster did not answer within SYNC_KAFKA_CONNECT_TIMEOUT_SECONDS at start."""


class StartAbandoned(Exception):
    """The service was asked to stop while it was still connecting."""


class SchemaMismatch(Exception):
    """The store's schema is newer than this release knows."""


async def connect_kafka(
    settings: Settings,
    start: Callable[[], Awaitable[None]],
    stopping: asyncio.Event | None = None,
) -> None:
    """Retry `start` with backoff while the cluster is unreachable (it may still be booting);
    give up between attempts once `stopping` is set."""
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
            if stopping is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                if stopping.is_set():
                    raise StartAbandoned("stopped while connecting to Kafka") from exc
            delay = min(delay * 2, 5.0)


async def ensure_topics(
    settings: Settings,
    stopping: asyncio.Event | None = None,
    options: dict[str, Any] | None = None,
) -> None:
    """Create the topics the service uses when the broker allows it; existing ones are kept."""
    if options is None:
        options = await asyncio.to_thread(kafka_client_options, settings)
    admin = AIOKafkaAdminClient(**options)
    try:
        await connect_kafka(settings, admin.start, stopping)
        existing = set(await admin.list_topics())
        names = {*settings.events_topics, settings.status_topic, settings.dlq_topic}
        dlq_config = {"max.message.bytes": str(MAX_LETTER_BYTES)}
        missing = [
            NewTopic(
                n,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=dlq_config if n == settings.dlq_topic else {},
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


async def open_store_checked(store: Store, settings: Settings) -> None:
    """Open the store, migrating it when SYNC_MIGRATE_ON_START is on. When it is off the
    schema must already be current: a newer one stops the start (SchemaMismatch), an older
    one is waited for (a `sync-service migrate` job may be running)."""
    status = getattr(store, "schema_status", None)
    if settings.migrate_on_start or status is None:
        if not settings.migrate_on_start:
            log.warning("this store can't report its schema version; opening it as it is")
        await store.open()
        return
    while True:
        current, expected = await status()
        if current > expected:
            raise SchemaMismatch(
                f"the store's schema is version {current}, newer than this release's "
                f"{expected}: run a release at least as new (SYNC_DATABASE_URL)"
            )
        if current == expected:
            break
        log.warning(
            "the store's schema is version %d, this release needs %d; waiting for "
            "`sync-service migrate` (SYNC_MIGRATE_ON_START is off)",
            current,
            expected,
        )
        await asyncio.sleep(SCHEMA_WAIT_SECONDS)
    await store.open(migrate=False)  # type: ignore[call-arg]


def new_consumer(settings: Settings, options: dict[str, Any] | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **(options if options is not None else kafka_client_options(settings)),
        group_id=settings.consumer_group,
        group_instance_id=settings.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=5000,
    )


def new_producer(options: dict[str, Any]) -> AIOKafkaProducer:
    """The producer of status events and dead letters; a dead letter may be as large as any
    record consumed (up to MAX_LETTER_BYTES)."""
    return AIOKafkaProducer(
        **options,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        max_request_size=MAX_LETTER_BYTES,
    )


@dataclass(slots=True)
class Running:
    """The pipeline's long-lived parts, as the lifecycle stops them."""

    loop: ConsumeLoop
    watcher: Watcher
    scheduler: Scheduler
    consume: asyncio.Task[None]
    watch: asyncio.Task[None]
    requests: RunRequests
    take_requests: asyncio.Task[None]


def build_catalog(settings: Settings, store: Store, egress: EgressPolicy | None) -> Catalog:
    """The one catalog service the API and the resources file both write through."""
    return Catalog(
        store,
        default_workspace=settings.default_workspace,
        events_topics=settings.events_topics,
        status_topic=settings.status_topic,
        dlq_topic=settings.dlq_topic,
        kafka_bootstrap_servers=settings.kafka_bootstrap_servers,
        kafka_destination_topic_prefix=settings.kafka_destination_topic_prefix,
        destination_check=(
            None if egress is None else functools.partial(check_destination, policy=egress)
        ),
    )


def build_app(
    settings: Settings,
    resources: ResourcesFile | None = None,
    tokens: dict[str, str] | None = None,
) -> web.Application:
    app = web.Application(client_max_size=settings.api_max_body_bytes, middlewares=[api_middleware])
    metrics = Metrics()
    store = open_store(settings)
    metrics.catalog_unreadable.set_function(store.unreadable)
    run_control = PipelineRunControl()
    app[METRICS] = metrics
    app[READINESS] = readiness = Readiness()
    app[FATAL] = fatal = asyncio.Event()
    app[EXIT_REASON] = exit_reason = ExitReason()
    app[STORE] = store
    app[TOKENS] = TokenTable(tokens or {})
    app[RUNS] = run_control
    app[DESTINATION_CONTEXT] = context = DestinationContext(
        settings.kafka_bootstrap_servers,
        EgressPolicy.from_settings(settings.egress_allow, settings.egress_deny),
    )
    app[CATALOG] = catalog_service = build_catalog(settings, store, context.egress)
    if settings.dbt_cloud_webhook_secret is not None:
        app[DBT_SECRET] = settings.dbt_cloud_webhook_secret
    add_health_routes(app)
    add_api_routes(app, lambda: build_openapi(__version__))
    if not tokens:
        log.warning("no API tokens configured (SYNC_API_TOKENS): the API refuses every request")

    health = ConsumerHealth()
    shutting_down = asyncio.Event()
    parts: dict[str, object] = {}

    async def store_answers() -> bool:
        try:
            return await asyncio.wait_for(store.ping(), 5)
        except Exception:
            return False

    async def consumer_ready() -> bool:
        source, loop = parts.get("source"), parts.get("loop")
        if not isinstance(source, KafkaSource) or not isinstance(loop, ConsumeLoop):
            return False
        return source.joined and not loop.stuck

    readiness.add("store", store_answers)
    readiness.add("consumer", consumer_ready)

    async def start(stack: contextlib.AsyncExitStack) -> Running:
        """Everything behind HTTP: the store (when not opened already), Kafka, the stages."""
        clock = SystemClock()
        if not settings.migrate_on_start:
            await open_store_checked(store, settings)
            stack.push_async_callback(store.close)
            await apply_file()
        kafka = await asyncio.to_thread(kafka_client_options, settings)
        await ensure_topics(settings, shutting_down, kafka)
        producer = new_producer(kafka)
        # Stopped however start-up ends (a SIGTERM may cancel it while it connects).
        stack.push_async_callback(producer.stop)
        await connect_kafka(settings, producer.start, shutting_down)
        consumer = new_consumer(settings, kafka)
        stack.push_async_callback(consumer.stop)
        source = KafkaSource(
            consumer,
            metrics,
            settings.fetch_max_records,
            InvalidRateMonitor(settings.dlq_alert_ratio, settings.dlq_alert_window),
            settings.dlq_topic,
        )
        reporter = StatusReporter(store, producer, settings.status_topic, metrics)
        runner = SyncRunner(
            store,
            functools.partial(open_destination, context=app[DESTINATION_CONTEXT]),
            reporter,
            metrics,
            clock,
            RetryPolicy(
                max_attempts=settings.destination_max_attempts,
                base_delay=settings.destination_retry_base_seconds,
                max_delay=settings.destination_retry_max_seconds,
            ),
            page_size=settings.run_page_rows,
            lease_ttl=settings.lease_ttl_seconds,
            lease_renew=settings.lease_renew_seconds,
        )
        stack.push_async_callback(runner.close)
        scheduler = Scheduler(
            runner,
            clock,
            max_concurrent_runs=settings.max_concurrent_runs,
            retry_base=settings.failed_rows_retry_seconds,
        )
        streams = (
            Streams(
                store,
                runner,
                metrics,
                clock,
                notify_pending=scheduler.notify_pending,
                retry_failed=scheduler.retry_failed,
                queue_bytes=settings.stream_queue_bytes,
                cache_bytes=settings.synced_cache_bytes,
            )
            if settings.streaming
            else None
        )
        if streams is not None:
            stack.push_async_callback(streams.close)
        catalog = CatalogView(
            store,
            source,
            scheduler if streams is None else SyncSets(scheduler, streams),
            events_topics=settings.events_topics,
            default_workspace=settings.default_workspace,
            reserved_topics=(settings.status_topic, settings.dlq_topic),
            decoder_for=DebeziumSources(),
        )
        loop = ConsumeLoop(
            source,
            Ingest(store, metrics),
            catalog,
            scheduler,
            DeadLetters(producer, settings.dlq_topic),
            store_answers,
            health=health,
            backoff=Backoff(
                settings.consumer_max_attempts,
                settings.consumer_retry_base_seconds,
                settings.consumer_retry_max_seconds,
            ),
            drain_seconds=settings.rebalance_drain_seconds,
            streams=streams,
            stop_seconds=settings.shutdown_grace_seconds,
        )
        await catalog.refresh()
        upkeep = Upkeep(
            store,
            reporter,
            scheduler.notify_pending,
            settings.store_retention(),
            prune_seconds=settings.store_prune_interval_seconds,
            first_prune_seconds=min(60.0, settings.store_prune_interval_seconds),
        )
        # Runs a stopped process left open end as interrupted before anything runs; their
        # rows are still pending and go in the first run (notified below).
        await upkeep.close_orphaned_runs()
        requests = RunRequests(store, catalog, scheduler, reporter, runner.owner)
        run_control.attach(store, catalog, scheduler, reporter, requests)
        if streams is not None:
            # The cache fills from the store before the group join (a restart's rows that
            # come again unchanged are dropped without a read); bounded, it goes on after.
            await streams.warmed(WARM_BEFORE_JOIN_SECONDS, shutting_down)
        await connect_kafka(settings, consumer.start, shutting_down)
        parts["source"], parts["loop"] = source, loop
        scheduler.notify_pending((await store.pending_counts()).keys())
        watcher = Watcher(store, catalog, metrics, settings.snapshot_warn_seconds, upkeep)
        consume = asyncio.create_task(loop.run(), name="consume")
        watch = asyncio.create_task(watcher.run(), name="catalog-watch")
        take_requests = asyncio.create_task(requests.run(), name="run-requests")

        def on_consume_done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("the consumer stopped", exc_info=task.exception())
                fatal.set()

        consume.add_done_callback(on_consume_done)
        log.info("sync-service started: consuming %s", ", ".join(sorted(catalog.plan.owners)))
        return Running(loop, watcher, scheduler, consume, watch, requests, take_requests)

    async def apply_file() -> None:
        if resources is not None:
            assert settings.config_file is not None
            await apply_resources(catalog_service, resources, settings.config_file)

    async def stop(running: Running) -> None:
        running.loop.stopping = True
        running.watcher.stopping = True
        running.watch.cancel()
        running.requests.stopping = True
        running.take_requests.cancel()
        # Runs of pending rows get the grace, meanwhile the consume loop ends after its
        # current fetch (at most 0.5 s), sends or stores the rows it holds in memory (the same
        # grace), and commits.
        runs = asyncio.create_task(running.scheduler.stop(settings.shutdown_grace_seconds))
        try:
            await asyncio.wait_for(
                asyncio.shield(running.consume), timeout=3 + settings.shutdown_grace_seconds
            )
        except TimeoutError:
            running.consume.cancel()
        except Exception:
            pass  # reported by on_consume_done
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({running.consume, running.watch, running.take_requests})
        await runs

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        stack = contextlib.AsyncExitStack()
        async with stack:
            if settings.migrate_on_start:
                # Opened before HTTP answers, so the API never meets a closed store.
                await store.open()
                stack.push_async_callback(store.close)
                await apply_file()

            def on_started(task: asyncio.Task[Running]) -> None:
                if task.cancelled() or task.exception() is None:
                    return
                exc = task.exception()
                if isinstance(exc, StartAbandoned):
                    return
                if isinstance(exc, KafkaUnavailable):
                    exit_reason.set(1, str(exc))
                elif isinstance(exc, SchemaMismatch | ResourcesError):
                    exit_reason.set(EXIT_CONFIG, str(exc))
                elif isinstance(exc, StoreUnavailable | ConnectionError):
                    exit_reason.set(1, str(exc))
                else:
                    log.error("the pipeline could not start", exc_info=exc)
                    exit_reason.set(1, f"the pipeline could not start: {exc}")
                fatal.set()

            starting = asyncio.create_task(start(stack), name="start")
            starting.add_done_callback(on_started)
            try:
                yield
            finally:
                run_control.detach()
                shutting_down.set()
                # A start-up that is connecting gives up between attempts; one that hangs in
                # an attempt is cancelled (the Kafka client may then leave a socket behind).
                await asyncio.wait({starting}, timeout=START_STOP_SECONDS)
                if not starting.done():
                    starting.cancel()
                await asyncio.wait({starting})
                if not starting.cancelled() and starting.exception() is None:
                    await stop(starting.result())
                log.info("sync-service stopped")

    app.cleanup_ctx.append(lifecycle)
    return app
