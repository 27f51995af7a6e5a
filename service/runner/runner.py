"""SyncRunner: one run of one sync, from pending rows to recorded outcomes."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from prometheus_client import Histogram

from service.core.errors import DestinationError
from service.core.interfaces import (
    Batch,
    BatchResult,
    Clock,
    DestinationWriter,
    RunReporter,
    RunRequest,
)
from service.core.metrics import Metrics
from service.core.models import Destination, RunStatus, Sync, SyncMode, SyncRun
from service.core.rows import PendingRow, RowChange, RowFailure, RowOutcomes
from service.runner.batcher import Batcher
from service.runner.delivery import Delivery
from service.runner.mapping import RowMapper, compile_mappings, renders_templates
from service.runner.planner import Plan, plan_changes
from service.runner.retry import RetryPolicy
from service.store.base import Lease, LeaseLost, Store

log = logging.getLogger(__name__)

DestinationFactory = Callable[[Destination], DestinationWriter]

#: A continuous run ends after this long without new rows (or at the end of its window).
RUN_IDLE_SECONDS = 1.0
_IDLE_POLL_SECONDS = 0.02
#: How often a running run looks for a cancel asked for through the store.
CANCEL_POLL_SECONDS = 1.0


class RunAborted(Exception):
    """A fatal destination error ended the run; its rows are already recorded as failed."""

    def __init__(self, error: DestinationError) -> None:
        super().__init__(str(error))
        self.error = error


class _Held:
    """The lease a run holds, whether the heartbeat lost it, and the run record."""

    def __init__(self, lease: Lease, request: RunRequest) -> None:
        self.lease = lease
        self.request = request
        self.lost = False
        self.run: SyncRun | None = None


class SyncRunner:
    def __init__(
        self,
        store: Store,
        open_destination: DestinationFactory,
        reporter: RunReporter,
        metrics: Metrics,
        clock: Clock,
        retry: RetryPolicy | None = None,
        page_size: int = 500,
        lease_ttl: float = 15.0,
        lease_renew: float = 5.0,
    ) -> None:
        self._store = store
        self._open_destination = open_destination
        self._reporter = reporter
        self._metrics = metrics
        self._clock = clock
        self._retry = retry or RetryPolicy()
        self._page_size = page_size
        #: A run's lease lasts `lease_ttl` and is renewed every `lease_renew` while the run
        #: lives, so a replica that dies frees its syncs within the TTL.
        self._lease_ttl = lease_ttl
        self._lease_renew = lease_renew
        self._leases: dict[str, Lease] = {}
        self._owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._deliveries: dict[str, tuple[datetime, Delivery]] = {}
        self._mappers: dict[str, tuple[datetime, RowMapper]] = {}

    @property
    def owner(self) -> str:
        """The name this runner holds sync leases under (for Store.take_run_requests)."""
        return self._owner

    async def close(self) -> None:
        deliveries, self._deliveries = self._deliveries, {}
        for _, delivery in deliveries.values():
            await delivery.writer.close()

    async def run(self, sync: Sync, request: RunRequest) -> SyncRun | None:
        """Run the sync, holding its lease; None when another replica holds it."""
        while (
            token := await self._store.acquire_lease(sync.id, self._owner, self._lease_ttl)
        ) is None:
            if request.run_id is None:
                return None  # the replica holding it sends these rows too
            await self._clock.sleep(0.5)  # a triggered run waits its turn
        held = _Held(Lease(sync.id, self._owner, token), request)
        task = asyncio.current_task()
        assert task is not None
        self._leases[sync.id] = held.lease
        beat = asyncio.create_task(self._heartbeat(held, task), name=f"lease-{sync.id}")
        try:
            run = await self._run(sync, request, held)
        except asyncio.CancelledError:
            # Stopped by a lost lease alone: the run ended interrupted, the caller goes on.
            if held.lost and held.run is not None and task.uncancel() == 0:
                return held.run
            raise
        finally:
            beat.cancel()
            self._leases.pop(sync.id, None)
            release = self._store.release_lease(sync.id, self._owner, token)
            await asyncio.shield(release)
        if held.lost and task.cancelling():
            task.uncancel()
        return run

    async def _heartbeat(self, held: _Held, task: asyncio.Task[object]) -> None:
        """Renew the lease while the run lives; stop the run once it cannot be renewed (taken
        by another replica, or the store unreachable until the lease would have expired).
        Between renewals, look for a cancel asked for through the store (on any replica)."""
        lease = held.lease
        renewed = due = self._clock.monotonic()
        tick = min(CANCEL_POLL_SECONDS, self._lease_renew)
        while True:
            await self._clock.sleep(tick)
            if await self._cancel_asked(held):
                log.info("sync %s: its run is cancelled through the API", lease.sync_id)
                held.request.cancelled = True
                task.cancel()
                return
            if self._clock.monotonic() - due < self._lease_renew - tick / 2:
                continue
            due = self._clock.monotonic()
            try:
                kept = await self._store.renew_lease(
                    lease.sync_id, lease.owner, lease.token, self._lease_ttl
                )
            except Exception as exc:
                log.warning("sync %s: lease not renewed: %s", lease.sync_id, exc)
                kept = self._clock.monotonic() - renewed < self._lease_ttl - self._lease_renew
                if kept:
                    continue
            if kept:
                renewed = self._clock.monotonic()
                continue
            log.warning("sync %s: lease lost; the run stops", lease.sync_id)
            held.lost = True
            task.cancel()
            return

    async def _cancel_asked(self, held: _Held) -> bool:
        if held.run is None or held.request.cancelled:
            return False
        try:
            return await self._store.cancel_requested(held.run.id)
        except Exception as exc:
            log.debug("sync %s: cancel requests not read: %s", held.lease.sync_id, exc)
            return False

    async def _run(self, sync: Sync, request: RunRequest, held: _Held) -> SyncRun:
        run = SyncRun(
            id=request.run_id or await self._store.next_run_id(),
            sync_id=sync.id,
            created_at=request.requested_at,
            full_resync=request.full_resync,
        )
        held.run = run
        try:
            # Bound to the lease: every later save of the run is refused once it is lost.
            await self._store.save_run(run, lease=held.lease)
            await self._attempt(sync, run, request)
        except LeaseLost:
            # Another replica holds the sync now and writes its state: write nothing more.
            log.warning("run %s of sync %s: lease lost, run interrupted", run.id, sync.id)
            run.status = RunStatus.INTERRUPTED
            run.error = "the sync's lease was lost during the run"
            run.finished_at = datetime.now(UTC)
            task = asyncio.current_task()
            if task is not None and task.cancelling() and not held.lost:
                raise asyncio.CancelledError from None
        return run

    async def _attempt(self, sync: Sync, run: SyncRun, request: RunRequest) -> None:
        if request.run_id is None:  # a triggered run was reported as queued already
            await self._enter(sync, run, RunStatus.QUEUED)
        try:
            await self._enter(sync, run, RunStatus.PROCESSING)
            run.started_at = datetime.now(UTC)
            await self._process(sync, run, request)
        except RunAborted as exc:
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
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("run %s of sync %s failed", run.id, sync.id)
            run.error = f"{type(exc).__name__}: {exc}"
            await self._finish(sync, run, RunStatus.FAILED)
        else:
            await self._enter(sync, run, RunStatus.REPORTING)
            final = RunStatus.WARNING if run.failed_rows.total else RunStatus.SUCCESS
            await self._finish(sync, run, final)

    async def enter(self, sync: Sync, run: SyncRun, status: RunStatus) -> None:
        """Move the run to `status`, saved and published."""
        await self._enter(sync, run, status)

    async def finish(self, sync: Sync, run: SyncRun, status: RunStatus) -> None:
        """End the run with `status`, its completion worked out."""
        await self._finish(sync, run, status)

    def count(self, run: SyncRun, kind: str, outcomes: RowOutcomes, now: float) -> None:
        """Count what became of rows sent, on the run and in the metrics."""
        self._count(run, kind, outcomes, now)

    async def delivery(self, destination: Destination) -> Delivery:
        """The destination's writer with its retries and pacing, opened once and shared."""
        return await self._delivery(destination)

    def mapper(self, sync: Sync) -> RowMapper:
        return self._mapper(sync)

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
            raise RunAborted(DestinationError(f"destination {sync.destination_id} not found"))
        try:
            delivery = await self._delivery(destination)
        except DestinationError as exc:
            raise RunAborted(exc) from exc
        sending = Sending(
            sync,
            run,
            delivery,
            record=functools.partial(self._record, sync, run, delivery),
            batch_rows=self._metrics.batch_rows,
        )
        try:
            await self._plan_and_send(sync, run, request, delivery, sending)
            await sending.finish()
        finally:
            await sending.cancel()

    async def _plan_and_send(
        self,
        sync: Sync,
        run: SyncRun,
        request: RunRequest,
        delivery: Delivery,
        sending: Sending,
    ) -> None:
        """Read pending rows page by page, plan them, and hand full batches to `sending`.
        Reading waits while the destination's batches in flight are at their limit, so a
        slow destination leaves rows in the store, not in memory."""
        mapper = self._mapper(sync)
        mode = sync.parsed_configuration.mode
        batcher: Batcher[RowChange] = Batcher(
            delivery.writer.batch_size, float("inf"), self._clock.monotonic
        )
        deadline = self._clock.monotonic() + request.window
        refused = await self._store.claim_rejected(sync.id, run.id)
        if refused:  # rows refused at ingest (no key) count among this run's failures
            run.planned_rows.add("added", refused)
            run.failed_rows.add("added", refused)
        if request.full_resync:
            await self._store.requeue_synced(sync.id)
        upto = await self._store.max_pending_seq(sync.id)
        cursor = 0
        reading = self._read(sync.id, cursor, upto)
        try:
            while True:
                page = await reading
                if page and await sending.settle({r.key for r in page}):
                    # An older version of one of these keys was in flight: read the page again,
                    # with what the destination holds now.
                    page = await self._store.pending_page(sync.id, cursor, upto, self._page_size)
                if not page:
                    while batch := batcher.drain(force=True):
                        await sending.dispatch(batch)
                    newest = await self._more_rows(sync.id, upto, request, deadline)
                    if newest is None:
                        return
                    upto = newest
                    reading = self._read(sync.id, cursor, upto)
                    continue
                cursor = page[-1].seq
                reading = self._read(sync.id, cursor, upto)  # the next page, while this one goes
                run.query_size += len(page)
                await self._plan_page(sync, run, request, page, mapper, mode, batcher, sending)
        finally:
            reading.cancel()

    def _read(self, sync_id: str, cursor: int, upto: int) -> asyncio.Task[list[PendingRow]]:
        return asyncio.create_task(
            self._store.pending_page(sync_id, cursor, upto, self._page_size), name="read-page"
        )

    async def _plan_page(
        self,
        sync: Sync,
        run: SyncRun,
        request: RunRequest,
        page: list[PendingRow],
        mapper: RowMapper,
        mode: SyncMode,
        batcher: Batcher[RowChange],
        sending: Sending,
    ) -> None:
        if renders_templates(mapper):
            plan = await plan_in_thread(page, mode, mapper, request.full_resync)
        else:
            plan = plan_changes(page, mode, mapper, full_resync=request.full_resync)
        if request.reset_cdc:
            # What is pending becomes what the destination is taken to hold; nothing is sent.
            await self._store.record_outcomes(
                sync.id,
                RowOutcomes(delivered=plan.changes, dropped=plan.dropped),
                self._clock.time(),
                lease=self._leases.get(sync.id),
            )
            return
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
                lease=self._leases.get(sync.id),
            )
        batcher.add(plan.changes)
        while batch := batcher.drain():
            await sending.dispatch(batch)

    async def _more_rows(
        self, sync_id: str, upto: int, request: RunRequest, deadline: float
    ) -> int | None:
        """In a continuous run's window: wait for rows newer than `upto` and return the newest
        seq, or None once the sync stayed idle for `RUN_IDLE_SECONDS` (or the window ended),
        so one run record covers a stream of small sends instead of one run each."""
        if not request.window:
            return None
        idle_since = self._clock.monotonic()
        step = max(request.linger, _IDLE_POLL_SECONDS)  # lingerMs still gathers a burst
        wait = request.linger > 0  # without linger, rows that came during the send go at once
        while self._clock.monotonic() < deadline and not request.should_stop():
            if wait:
                await self._clock.sleep(step)
            wait = True
            newest = await self._store.max_pending_seq(sync_id)
            if newest > upto:
                return newest
            if self._clock.monotonic() - idle_since >= RUN_IDLE_SECONDS:
                return None
        return None

    async def _record(self, sync: Sync, run: SyncRun, delivery: Delivery, sent: list[Sent]) -> None:
        """Record what became of each row of the batches sent, in one store transaction."""
        outcomes = RowOutcomes()
        for rows, result in sent:
            for row in rows:
                error = result.rejected.get(row.key)
                if error is None:
                    outcomes.delivered.append(row)
                else:
                    outcomes.failed.append(RowFailure(row.key, row.seq, row.op, error))
        now = self._clock.time()
        await self._store.record_outcomes(sync.id, outcomes, now, lease=self._leases.get(sync.id))
        self._count(run, delivery.writer.type_name, outcomes, now)

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

    async def _delivery(self, destination: Destination) -> Delivery:
        cached = self._deliveries.get(destination.id)
        if cached is not None and cached[0] == destination.updated_at:
            return cached[1]
        if cached is not None:
            await cached[1].writer.close()
            del self._deliveries[destination.id]
        writer = self._open_destination(destination)
        await writer.open()
        delivery = Delivery(writer, self._retry, self._clock, self._metrics)
        self._deliveries[destination.id] = (destination.updated_at, delivery)
        return delivery

    def _mapper(self, sync: Sync) -> RowMapper:
        cached = self._mappers.get(sync.id)
        if cached is not None and cached[0] == sync.updated_at:
            return cached[1]
        mapper = compile_mappings(sync.parsed_configuration)
        self._mappers[sync.id] = (sync.updated_at, mapper)
        return mapper


#: Work per worker-thread call when templates render: a few rows at a time, until this many
#: seconds have passed. A cancelled run waits for one such call at most, and each row's render
#: is bounded in CPU time.
_TEMPLATE_SLICE_SECONDS = 0.02
_TEMPLATE_ROWS_AT_ONCE = 8


def _plan_for_a_while(
    page: list[PendingRow], start: int, mode: SyncMode, mapper: RowMapper, full_resync: bool
) -> tuple[Plan, int]:
    """Plans rows of `page` from `start` for about `_TEMPLATE_SLICE_SECONDS`; returns the
    plan and where it stopped. Runs in a worker thread."""
    plan = Plan()
    deadline = time.perf_counter() + _TEMPLATE_SLICE_SECONDS
    while start < len(page) and time.perf_counter() < deadline:
        part = plan_changes(
            page[start : start + _TEMPLATE_ROWS_AT_ONCE], mode, mapper, full_resync=full_resync
        )
        plan.changes.extend(part.changes)
        plan.dropped.extend(part.dropped)
        plan.rejected.extend(part.rejected)
        start += _TEMPLATE_ROWS_AT_ONCE
    return plan, start


async def plan_in_thread(
    page: list[PendingRow], mode: SyncMode, mapper: RowMapper, full_resync: bool
) -> Plan:
    """Templates may take milliseconds a row: planned in a worker thread, a slice at a time,
    the event loop (every other sync, the API, the consumer) keeps running meanwhile."""
    plan = Plan()
    done = 0
    while done < len(page):
        part, done = await asyncio.to_thread(
            _plan_for_a_while, page, done, mode, mapper, full_resync
        )
        plan.changes.extend(part.changes)
        plan.dropped.extend(part.dropped)
        plan.rejected.extend(part.rejected)
    return plan


#: Batches sent and waiting for their outcome to be recorded, beyond those being sent, however
#: low the destination's concurrency: while the store records one group, the next batches
#: go out and are then recorded together, in one transaction. Up to `RECORD_AHEAD_ROWS` rows
#: wait, and at least `RECORD_AHEAD` batches: small batches (a webhook's 100 rows) would
#: otherwise leave a transaction too few rows to keep up with a fast destination. Measured
#: in S1 with 500-row batches: 8 batches instead of 4 made 100-row events 1.2-1.4x faster and
#: cost no CPU per row; 16 and 32 gained nothing more. It is also the most a crash sends again.
RECORD_AHEAD = 4
RECORD_AHEAD_ROWS = 4000

#: A batch sent: its rows and what the destination answered.
Sent = tuple[list[RowChange], BatchResult]


class Sending:
    """The batches of one run in flight at once: up to the destination's adaptive concurrency
    limit in requests, and as many again (at least `RECORD_AHEAD` batches, or batches of up to
    `RECORD_AHEAD_ROWS` rows) sent and being recorded.
    Batches that come back while the store records others are recorded together, in one
    transaction. A page holding a key that a batch in flight holds is planned only after that
    batch is recorded (`settle`): versions of a row reach the destination and the store in
    order, and each is compared with what the destination holds. A fatal error stops new
    batches; the ones in flight finish and record their rows."""

    def __init__(
        self,
        sync: Sync,
        run: SyncRun,
        delivery: Delivery,
        *,
        record: Callable[[list[Sent]], Awaitable[None]],
        batch_rows: Histogram,
    ) -> None:
        self._record_sent = record
        self._batch_rows = batch_rows
        self._sync = sync
        self._run = run
        self._delivery = delivery
        self._tasks: dict[asyncio.Task[DestinationError | None], set[str]] = {}
        self._fatal: DestinationError | None = None
        self._count = 0
        self._sent: list[tuple[Sent, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    def _collect(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            del self._tasks[task]
            fatal = task.result()  # an unexpected error (the store) ends the run here
            if fatal is not None and self._fatal is None:
                self._fatal = fatal

    def check(self) -> None:
        """Raises what a finished batch raised (the store), or RunAborted after a fatal error."""
        self._collect()
        if self._fatal is not None:
            raise RunAborted(self._fatal)

    async def settle(self, keys: set[str]) -> bool:
        """Wait for the batches in flight that hold any of these keys; whether there were any."""
        holding = [t for t, held in self._tasks.items() if not keys.isdisjoint(held)]
        if holding:
            await asyncio.wait(holding)
        return bool(holding)

    async def dispatch(self, rows: list[RowChange]) -> None:
        limiter = self._delivery.limiter
        self._collect()
        ahead = max(limiter.limit, RECORD_AHEAD, RECORD_AHEAD_ROWS // max(len(rows), 1))
        while len(self._tasks) >= limiter.limit + ahead:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            self._collect()
        await limiter.acquire()
        self._collect()
        if self._fatal is not None:
            await limiter.release()
            raise RunAborted(self._fatal)
        self._count += 1
        task = asyncio.create_task(self._send(rows, self._count))
        self._tasks[task] = {r.key for r in rows}

    async def _send(self, rows: list[RowChange], n: int) -> DestinationError | None:
        sync, run = self._sync, self._run
        try:
            self._batch_rows.observe(len(rows))
            result = await self._delivery.send(Batch(sync.id, run.id, f"{run.id}-{n}", rows))
            if result.fatal is not None and self._fatal is None:
                self._fatal = result.fatal  # before the slot frees, so no further batch starts
        finally:
            await asyncio.shield(self._delivery.limiter.release())
        recorded = asyncio.get_running_loop().create_future()
        self._sent.append(((rows, result), recorded))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record())
        await recorded
        return result.fatal

    async def _record(self) -> None:
        while self._sent:
            taken, self._sent = self._sent, []
            try:
                await self._record_sent([sent for sent, _ in taken])
            except BaseException as exc:  # the batches' own tasks raise it
                for _, recorded in taken:
                    if not recorded.done():
                        recorded.set_exception(exc)
                return
            for _, recorded in taken:
                if not recorded.done():
                    recorded.set_result(None)

    async def finish(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._collect()
        if self._fatal is not None:
            raise RunAborted(self._fatal)

    async def cancel(self) -> None:
        """Stop whatever is still in flight (shutdown, cancel); those rows stay pending."""
        waiting = [*self._tasks, *([self._recorder] if self._recorder else [])]
        for task in waiting:
            task.cancel()
        if waiting:
            await asyncio.wait(waiting)
        self._tasks.clear()
