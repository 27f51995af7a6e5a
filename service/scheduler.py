"""The scheduler: decides when each sync runs (continuous, interval, trigger, retry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cronsim import CronSim

from service.core.interfaces import Clock, RunRequest, SyncExecutor
from service.core.models import (
    ContinuousSchedule,
    CronSchedule,
    IntervalSchedule,
    RunStatus,
    Sync,
    SyncRun,
    SyncSchedule,
    VisualExpression,
    VisualSchedule,
)

log = logging.getLogger(__name__)


_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def next_run_at(
    schedule: SyncSchedule, now: datetime, last_run: datetime | None
) -> datetime | None:
    """When the schedule next asks for a run (UTC), None if it never does on its own.

    interval: `last_run` + the interval, or now when that moment has passed or there was no
    run yet; cron and visual: the first matching minute after `now`; dbt-cloud, manual and
    continuous: None (webhooks, triggers and arriving rows start those)."""
    if isinstance(schedule, IntervalSchedule):
        if last_run is None:
            return now
        return max(now, last_run + timedelta(seconds=schedule.schedule.interval.seconds))
    if isinstance(schedule, CronSchedule):
        return next(iter(CronSim(schedule.schedule.expression, now)))
    if isinstance(schedule, VisualSchedule):
        return min(_next_visual(e, now) for e in schedule.schedule.expressions)
    return None


def _next_visual(expression: VisualExpression, now: datetime) -> datetime:
    hour, minute = (int(part) for part in expression.time.split(":"))
    days = {i for i, name in enumerate(_WEEKDAYS) if expression.days.get(name)}  # type: ignore[call-overload]
    today = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    for ahead in range(8):
        candidate = today + timedelta(days=ahead)
        if candidate.weekday() in days and candidate > now:
            return candidate
    return datetime.max.replace(tzinfo=UTC)  # no day selected: never


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@dataclass(slots=True)
class RetryBackoff:
    """Delay before retrying a sync whose last run left failed rows: doubles, capped."""

    base: float
    cap: float
    failures: int = 0

    def next_delay(self) -> float:
        self.failures += 1
        return min(self.cap, self.base * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0

    def current(self) -> float:
        """The delay at the present failure count, without counting one more."""
        return min(self.cap, self.base * 2 ** max(0, self.failures - 1))


@dataclass(slots=True)
class _SyncState:
    sync: Sync
    backoff: RetryBackoff
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    pending: bool = False
    trigger: RunRequest | None = None
    retry_at: float | None = None
    #: The next run the schedule asks for (UTC), computed once and kept until it is due.
    next_due: datetime | None = None
    last_scheduled: datetime | None = None
    #: The last run failed outright: new rows wait for the retry too, not only failed ones.
    blocked: bool = False
    running: bool = False
    task: asyncio.Task[None] | None = None
    current: RunRequest | None = None
    current_run: asyncio.Task[SyncRun | None] | None = None


class Scheduler:
    def __init__(
        self,
        executor: SyncExecutor,
        clock: Clock,
        *,
        max_concurrent_runs: int = 16,
        retry_base: float = 10.0,
        retry_cap: float = 600.0,
        continuous_window: float = 60.0,
        lease_retry: float = 5.0,
    ) -> None:
        self._executor = executor
        #: A sync whose lease another replica held is tried again after this long, so rows
        #: that arrived behind that lease go once it frees, without waiting for a new event.
        self._lease_retry = lease_retry
        self._clock = clock
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._window = continuous_window
        self._states: dict[str, _SyncState] = {}
        self._stopping = False

    # inputs ----------------------------------------------------------------------------

    def set_syncs(self, syncs: Iterable[Sync]) -> None:
        """The current catalog: loops start for new enabled syncs and end for removed ones."""
        wanted = {s.id: s for s in syncs if not s.disabled}
        for sync_id in list(self._states):
            if sync_id not in wanted:
                state = self._states.pop(sync_id)
                if state.task is not None:
                    state.task.cancel()
        for sync_id, sync in wanted.items():
            state = self._states.get(sync_id)
            if state is None:
                state = _SyncState(sync, RetryBackoff(self._retry_base, self._retry_cap))
                self._states[sync_id] = state
                state.task = asyncio.create_task(self._loop(state), name=f"sync-{sync_id}")
            else:
                if state.sync.schedule != sync.schedule:
                    state.next_due = None
                state.sync = sync
                state.wake.set()

    def notify_pending(self, sync_ids: Iterable[str]) -> None:
        """Rows became pending for these syncs (continuous syncs run on this)."""
        for sync_id in sync_ids:
            state = self._states.get(sync_id)
            if state is not None:
                state.pending = True
                state.wake.set()

    def retry_failed(self, sync_ids: Iterable[str], *, now: bool = False) -> None:
        """Rows of these syncs failed outside a run (sent from memory): a run retries them
        after the current backoff, or at once when `now` (their destination answers again)."""
        at = self._clock.monotonic()
        for sync_id in sync_ids:
            state = self._states.get(sync_id)
            if state is None:
                continue
            if now:
                state.backoff.reset()
                state.retry_at = at
            elif state.retry_at is None:
                state.retry_at = at + state.backoff.current()
            state.wake.set()

    def knows(self, sync_id: str) -> bool:
        return sync_id in self._states

    def queued_trigger(self, sync_id: str) -> RunRequest | None:
        """The triggered run waiting to start, which further triggers join."""
        state = self._states.get(sync_id)
        return state.trigger if state is not None else None

    def queued_runs(self) -> list[tuple[str, RunRequest]]:
        """The triggered runs waiting to start, by sync."""
        return [(i, s.trigger) for i, s in self._states.items() if s.trigger is not None]

    def trigger(self, sync_id: str, request: RunRequest) -> bool:
        """Queue one run (after the one in flight, if any)."""
        state = self._states.get(sync_id)
        if state is None:
            return False
        if state.trigger is None:
            state.trigger = request
        else:
            state.trigger.full_resync |= request.full_resync
            state.trigger.reset_cdc |= request.reset_cdc
        state.wake.set()
        return True

    def cancel(self, sync_id: str, run_id: str) -> str | None:
        """`queued` when the run had not started (it never will), `running` when it was
        interrupted, None when no such run is queued or running."""
        state = self._states.get(sync_id)
        if state is None:
            return None
        if state.trigger is not None and state.trigger.run_id == run_id:
            state.trigger = None
            return "queued"
        current = state.current
        if current is not None and current.run_id == run_id and state.current_run is not None:
            current.cancelled = True
            state.current_run.cancel()
            return "running"
        return None

    async def stop(self, grace: float) -> None:
        """Stop starting runs; give runs in flight `grace` seconds, then interrupt them."""
        self._stopping = True
        tasks = []
        for state in self._states.values():
            if state.task is None:
                continue
            if not state.running:
                state.task.cancel()
            tasks.append(state.task)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # the loop --------------------------------------------------------------------------

    async def _loop(self, state: _SyncState) -> None:
        while not self._stopping:
            request = await self._next_request(state)
            if request is None or self._stopping:
                continue
            state.running = True
            try:
                async with self._slots:
                    run = await self._execute(state, request)
            except asyncio.CancelledError:
                if not request.cancelled or _being_cancelled():
                    raise
                continue  # cancelled through the API: the run recorded itself
            except Exception:
                log.exception("sync %s: run could not be executed", state.sync.id)
                run = SyncRun(id="0", sync_id=state.sync.id, status=RunStatus.FAILED)
            finally:
                state.running = False
                state.current = state.current_run = None
            if run is None:  # another replica holds the sync's lease and runs it
                if state.retry_at is None:
                    state.retry_at = self._clock.monotonic() + self._lease_retry
                continue
            state.blocked = run.status is RunStatus.FAILED
            # Continuous syncs retry failed rows on their own; others on their next run.
            retries = isinstance(state.sync.schedule, ContinuousSchedule)
            if retries and run.status in (RunStatus.FAILED, RunStatus.WARNING):
                delay = state.backoff.next_delay()
                state.retry_at = self._clock.monotonic() + delay
                log.info("sync %s: retrying failed rows in %.0fs", state.sync.id, delay)
            else:
                state.backoff.reset()
                state.retry_at = None

    async def _execute(self, state: _SyncState, request: RunRequest) -> SyncRun | None:
        # The run gets a task of its own, so a cancel request can stop it alone.
        state.current = request
        state.current_run = asyncio.create_task(self._executor.run(state.sync, request))
        return await state.current_run

    async def _next_request(self, state: _SyncState) -> RunRequest | None:
        """Wait until the sync should run and say how."""
        sync = state.sync
        now = self._clock.monotonic()
        if state.trigger is not None:
            request, state.trigger = state.trigger, None
            state.pending = False
            return request
        continuous = isinstance(sync.schedule, ContinuousSchedule)
        if state.retry_at is not None and now >= state.retry_at:
            state.retry_at = None
            state.pending = False
            return RunRequest("retry")
        if continuous and state.pending and not state.blocked:
            linger = sync.schedule.schedule.linger_ms / 1000  # type: ignore[union-attr]
            await self._clock.sleep(linger)
            state.pending = False
            return RunRequest(
                "continuous", window=self._window, linger=linger, should_stop=lambda: self._stopping
            )
        wall = datetime.fromtimestamp(self._clock.time(), UTC)
        if state.next_due is None:
            state.next_due = next_run_at(
                sync.schedule, wall, state.last_scheduled or sync.last_run_at
            )
        if state.next_due is not None and wall >= state.next_due:
            state.last_scheduled, state.next_due = wall, None
            return RunRequest("schedule")
        wakeups = [t - now for t in (state.retry_at,) if t is not None]
        if state.next_due is not None:
            wakeups.append((state.next_due - wall).total_seconds())
        # Capped, so a far-off schedule is looked at again now and then (clock changes).
        timeout = min(3600.0, max(0.0, min(wakeups))) if wakeups else None
        state.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.wake.wait(), timeout)
        return None
