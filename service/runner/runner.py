"""SyncRunner: one run of one sync, from pending rows to recorded outcomes."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from service.core.errors import DestinationError, DestinationUnavailable, RetriableError
from service.core.interfaces import Batch, Clock, DestinationWriter, RunReporter, RunRequest
from service.core.metrics import Metrics
from service.core.models import Destination, RunStatus, Sync, SyncRun
from service.core.rows import RowChange, RowFailure, RowOutcomes
from service.runner.batcher import Batcher
from service.runner.mapping import RowMapper, compile_mappings
from service.runner.planner import plan_changes
from service.runner.retry import RetryPolicy
from service.store.base import Store

log = logging.getLogger(__name__)

DestinationFactory = Callable[[Destination], DestinationWriter]


class _RunAborted(Exception):
    """A fatal destination error ended the run; its rows are already recorded as failed."""

    def __init__(self, error: DestinationError) -> None:
        super().__init__(str(error))
        self.error = error


class SyncRunner:
    def __init__(
        self,
        store: Store,
        open_destination: DestinationFactory,
        reporter: RunReporter,
        metrics: Metrics,
        clock: Clock,
        retry: RetryPolicy | None = None,
        page_size: int = 2000,
    ) -> None:
        self._store = store
        self._open_destination = open_destination
        self._reporter = reporter
        self._metrics = metrics
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._page_size = page_size
        self._writers: dict[str, tuple[datetime, DestinationWriter]] = {}
        self._mappers: dict[str, tuple[datetime, RowMapper]] = {}

    async def close(self) -> None:
        writers, self._writers = self._writers, {}
        for _, writer in writers.values():
            await writer.close()

    async def run(self, sync: Sync, request: RunRequest) -> SyncRun:
        run = SyncRun(
            id=request.run_id or await self._store.next_run_id(),
            sync_id=sync.id,
            created_at=request.requested_at,
            full_resync=request.full_resync,
        )
        if request.run_id is None:  # a triggered run was reported as queued already
            await self._enter(sync, run, RunStatus.QUEUED)
        try:
            await self._enter(sync, run, RunStatus.PROCESSING)
            run.started_at = datetime.now(UTC)
            await self._process(sync, run, request)
        except _RunAborted as exc:
            run.error = str(exc.error)
            await self._finish(sync, run, RunStatus.FAILED)
        except asyncio.CancelledError:
            # Rows not yet recorded stay pending and go in the next run.
            if request.cancelled:
                run.error = "cancelled through the API"
                final = RunStatus.CANCELLED
            else:
                run.error = "the service stopped during the run"
                final = RunStatus.INTERRUPTED
            await asyncio.shield(self._finish(sync, run, final))
            raise
        except Exception as exc:
            log.exception("run %s of sync %s failed", run.id, sync.id)
            run.error = f"{type(exc).__name__}: {exc}"
            await self._finish(sync, run, RunStatus.FAILED)
        else:
            await self._enter(sync, run, RunStatus.REPORTING)
            final = RunStatus.WARNING if run.failed_rows.total else RunStatus.SUCCESS
            await self._finish(sync, run, final)
        return run

    async def _enter(self, sync: Sync, run: SyncRun, status: RunStatus) -> None:
        run.status = status
        await self._reporter.report(sync, run)

    async def _finish(self, sync: Sync, run: SyncRun, status: RunStatus) -> None:
        run.finished_at = datetime.now(UTC)
        planned = run.planned_rows.total
        done = run.successful_rows.total + run.failed_rows.total
        run.completion_ratio = round(done / planned, 4) if planned else 1.0
        await self._enter(sync, run, status)

    async def _process(self, sync: Sync, run: SyncRun, request: RunRequest) -> None:
        destination = await self._store.get_destination(sync.destination_id)
        if destination is None:
            raise _RunAborted(DestinationError(f"destination {sync.destination_id} not found"))
        try:
            writer = await self._writer(destination)
        except DestinationError as exc:
            raise _RunAborted(exc) from exc
        mapper = self._mapper(sync)
        mode = sync.parsed_configuration.mode
        batcher: Batcher[RowChange] = Batcher(
            writer.batch_size, float("inf"), self._clock.monotonic
        )
        deadline = self._clock.monotonic() + request.window
        upto = await self._store.max_pending_seq(sync.id)
        cursor, batch_no = 0, 0
        while True:
            page = await self._store.pending_page(sync.id, cursor, upto, self._page_size)
            if not page:
                while batch := batcher.drain(force=True):
                    batch_no += 1
                    await self._deliver(sync, run, writer, batch, batch_no)
                if (
                    request.window
                    and self._clock.monotonic() < deadline
                    and not request.should_stop()
                ):
                    await self._clock.sleep(request.linger)
                    newest = await self._store.max_pending_seq(sync.id)
                    if newest > upto:
                        upto = newest
                        continue
                return
            cursor = page[-1].seq
            run.query_size += len(page)
            synced = await self._store.synced_rows(sync.id, [r.key for r in page])
            plan = plan_changes(page, synced, mode, mapper, full_resync=request.full_resync)
            counts = Counter(c.op for c in plan.changes)
            counts.update(f.op for f in plan.rejected)
            for op, n in counts.items():
                run.planned_rows.add(op, n)
                self._metrics.rows_planned.labels(op).inc(n)
            for failure in plan.rejected:
                run.failed_rows.add(failure.op)
            if plan.dropped:
                self._metrics.rows_unchanged.inc(len(plan.dropped))
            if plan.dropped or plan.rejected:
                await self._store.record_outcomes(
                    sync.id,
                    RowOutcomes(failed=plan.rejected, dropped=plan.dropped),
                    self._clock.time(),
                )
            batcher.add(plan.changes)
            while batch := batcher.drain():
                batch_no += 1
                await self._deliver(sync, run, writer, batch, batch_no)

    async def _deliver(
        self, sync: Sync, run: SyncRun, writer: DestinationWriter, rows: list[RowChange], n: int
    ) -> None:
        batch = Batch(sync.id, run.id, f"{run.id}-{n}", rows)
        kind = writer.type_name
        self._metrics.batch_rows.observe(len(rows))
        attempt = 1
        fatal: DestinationError | None = None
        while True:
            started = self._clock.monotonic()
            try:
                result = await writer.write(batch)
            except RetriableError as exc:
                self._observe_request(kind, started)
                if attempt >= self._retry.max_attempts:
                    fatal = DestinationUnavailable(f"{exc} (gave up after {attempt} attempts)")
                    rejected = dict.fromkeys((r.key for r in rows), str(fatal))
                    break
                self._metrics.destination_retries.labels(kind).inc()
                await self._clock.sleep(self._retry.delay(attempt, exc.retry_after))
                attempt += 1
            except DestinationError as exc:
                self._observe_request(kind, started)
                rejected = dict.fromkeys((r.key for r in rows), str(exc))
                fatal = exc if exc.fatal else None
                break
            else:
                self._observe_request(kind, started)
                rejected = result.rejected
                break

        outcomes = RowOutcomes()
        for row in rows:
            error = rejected.get(row.key)
            if error is None:
                outcomes.delivered.append(row)
            else:
                outcomes.failed.append(RowFailure(row.key, row.seq, row.op, error))
        now = self._clock.time()
        await self._store.record_outcomes(sync.id, outcomes, now)
        self._count(run, kind, outcomes, now)
        if fatal is not None:
            raise _RunAborted(fatal)

    def _observe_request(self, kind: str, started: float) -> None:
        elapsed = self._clock.monotonic() - started
        self._metrics.destination_request_seconds.labels(kind).observe(elapsed)

    def _count(self, run: SyncRun, kind: str, outcomes: RowOutcomes, now: float) -> None:
        delivered = Counter(r.op for r in outcomes.delivered)
        failed = Counter(f.op for f in outcomes.failed)
        for op, n in delivered.items():
            run.successful_rows.add(op, n)
            self._metrics.rows_delivered.labels(kind, op, "delivered").inc(n)
        for op, n in failed.items():
            run.failed_rows.add(op, n)
            self._metrics.rows_delivered.labels(kind, op, "failed").inc(n)
        stamps = [r.emitted_at for r in outcomes.delivered if r.emitted_at is not None]
        if stamps:
            self._metrics.event_to_delivery_seconds.observe(max(0.0, now - min(stamps)))
        if outcomes.failed:
            log.warning(
                "sync %s run %s: %d rows not delivered: %s",
                run.sync_id,
                run.id,
                len(outcomes.failed),
                outcomes.failed[0].error,
            )

    async def _writer(self, destination: Destination) -> DestinationWriter:
        cached = self._writers.get(destination.id)
        if cached is not None and cached[0] == destination.updated_at:
            return cached[1]
        if cached is not None:
            await cached[1].close()
            del self._writers[destination.id]
        writer = self._open_destination(destination)
        await writer.open()
        self._writers[destination.id] = (destination.updated_at, writer)
        return writer

    def _mapper(self, sync: Sync) -> RowMapper:
        cached = self._mappers.get(sync.id)
        if cached is not None and cached[0] == sync.updated_at:
            return cached[1]
        mapper = compile_mappings(sync.parsed_configuration)
        self._mappers[sync.id] = (sync.updated_at, mapper)
        return mapper
