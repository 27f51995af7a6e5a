"""Run control through the store: the API replica records a trigger or cancel there, and the
replica that runs the sync (whichever it is) carries it out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from service.core.interfaces import RunRequest
from service.core.models import RunStatus, Sync, SyncRun
from service.pipeline.catalog import CatalogView
from service.scheduler import Scheduler
from service.status import StatusReporter
from service.store.base import RunControl, RunQuery, Store

log = logging.getLogger(__name__)

#: How long a trigger made while the service starts waits for the pipeline.
START_WAIT_SECONDS = 30.0
#: How often each replica takes the run requests it may carry out and looks for cancels.
POLL_SECONDS = 1.0


@dataclass(slots=True)
class _Parts:
    store: Store
    catalog: CatalogView
    scheduler: Scheduler
    reporter: StatusReporter
    requests: RunRequests | None


class PipelineNotRunning(RuntimeError):
    """The API asked for a run before the pipeline started (or after it stopped)."""


async def _cancel_queued(store: Store, reporter: StatusReporter, sync: Sync, run_id: str) -> None:
    """Record a run that never started as cancelled."""
    runs, _ = await store.list_runs(RunQuery(sync.id, run_id=run_id, limit=1))
    if runs and not runs[0].status.is_final:
        run = runs[0]
        run.status = RunStatus.CANCELLED
        run.finished_at = datetime.now(UTC)
        run.error = "cancelled through the API before it started"
        await reporter.report(sync, run)


class PipelineRunControl:
    """The API holds this from the start; the pipeline attaches its parts once it runs."""

    def __init__(self) -> None:
        self._parts: _Parts | None = None
        self._attached = asyncio.Event()
        self._lock = asyncio.Lock()

    def attach(
        self,
        store: Store,
        catalog: CatalogView,
        scheduler: Scheduler,
        reporter: StatusReporter,
        requests: RunRequests | None = None,
    ) -> None:
        self._parts = _Parts(store, catalog, scheduler, reporter, requests)
        self._attached.set()

    def detach(self) -> None:
        self._parts = None
        self._attached.clear()

    async def _running(self) -> _Parts:
        if self._parts is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._attached.wait(), START_WAIT_SECONDS)
        if self._parts is None:
            raise PipelineNotRunning("the pipeline is not running")
        return self._parts

    async def trigger(self, sync: Sync, *, full_resync: bool, reset_cdc: bool = False) -> str:
        p = await self._running()
        async with self._lock:
            if not p.scheduler.knows(sync.id):
                await p.catalog.refresh()  # created a moment ago
            queued = p.scheduler.queued_trigger(sync.id)
            if queued is not None and queued.run_id is not None:
                queued.full_resync |= full_resync
                queued.reset_cdc |= reset_cdc
                return queued.run_id
            run = SyncRun(id=await p.store.next_run_id(), sync_id=sync.id, full_resync=full_resync)
            await p.reporter.report(sync, run)
            if reset_cdc or p.requests is None:
                # A request in the store carries no reset: this replica runs it (waiting for
                # the sync's lease if another replica holds it).
                request = RunRequest(
                    "trigger",
                    requested_at=run.created_at,
                    run_id=run.id,
                    full_resync=full_resync,
                    reset_cdc=reset_cdc,
                )
                p.scheduler.trigger(sync.id, request)
            else:
                await p.store.request_run(sync.id, run.id, full_resync)
                # Taken here at once when this replica may run the sync, so triggers that
                # follow join it; otherwise the replica holding the sync takes it.
                try:
                    await p.requests.poll()
                except Exception as exc:  # recorded: the poll loop takes it later
                    log.warning("run request of sync %s not taken yet: %s", sync.id, exc)
            return run.id

    async def cancel(self, sync: Sync, run_id: str) -> bool:
        p = await self._running()
        async with self._lock:
            outcome = p.scheduler.cancel(sync.id, run_id)
            if outcome == "running":
                return True
            if outcome == "queued":
                await _cancel_queued(p.store, p.reporter, sync, run_id)
                return True
            # Queued or running on another replica (or its request not yet taken): the one
            # that holds it cancels it when it sees the request.
            runs, _ = await p.store.list_runs(RunQuery(sync.id, run_id=run_id, limit=1))
            if not runs or runs[0].status.is_final:
                return False
            await p.store.request_cancel(sync.id, run_id)
            if p.requests is not None:
                p.requests.wake()
            return True


class RunRequests:
    """Each replica's share of run control: every second it takes the trigger requests of
    syncs it may run (their lease free or its own) and hands them to its scheduler, and
    cancels the queued runs whose cancel was asked for. Running runs see their cancel on
    their lease heartbeat (the runner)."""

    def __init__(
        self,
        store: Store,
        catalog: CatalogView,
        scheduler: Scheduler,
        reporter: StatusReporter,
        owner: str,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._scheduler = scheduler
        self._reporter = reporter
        self._owner = owner
        #: Taken requests waiting for the sync's queued trigger to start (one at a time).
        self._waiting: dict[str, deque[tuple[RunRequest, Sync]]] = {}
        self._wake = asyncio.Event()
        self._polling = asyncio.Lock()
        self.stopping = False

    def wake(self) -> None:
        """Look now rather than at the next tick (a request was just recorded)."""
        self._wake.set()

    async def run(self) -> None:
        failing = False
        while not self.stopping:
            try:
                await self.poll()
                if failing:
                    log.info("run requests are read again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("run requests could not be read: %s", exc)
                failing = True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def poll(self) -> None:
        async with self._polling:
            for control in await self._store.take_run_requests(self._owner):
                await self._take(control)
            await self._cancel_queued()
            self._hand_over()

    async def _take(self, control: RunControl) -> None:
        sync = await self._sync(control.sync_id)
        if control.run_id is None:
            if sync is not None:
                request = RunRequest("trigger", full_resync=control.full_resync)
                self._waiting.setdefault(sync.id, deque()).append((request, sync))
            return
        runs, _ = await self._store.list_runs(
            RunQuery(control.sync_id, run_id=control.run_id, limit=1)
        )
        if not runs or runs[0].status is not RunStatus.QUEUED:
            return  # cancelled before anyone took it, pruned, or started already
        run = runs[0]
        if self._join(control):
            return
        if sync is None or await self._store.cancel_requested(run.id):
            run.status = RunStatus.CANCELLED
            run.finished_at = datetime.now(UTC)
            run.error = (
                "cancelled through the API before it started"
                if sync is not None
                else "the sync was disabled or deleted before the run started"
            )
            await self._store.save_run(run)
            await self._reporter.report_saved(run)
            return
        request = RunRequest(
            "trigger",
            requested_at=run.created_at,
            run_id=run.id,
            full_resync=control.full_resync,
        )
        self._waiting.setdefault(sync.id, deque()).append((request, sync))

    def _join(self, control: RunControl) -> bool:
        """A request for a run already waiting here (asked again) joins it."""
        queued = self._scheduler.queued_trigger(control.sync_id)
        waiting = [r for r, _ in self._waiting.get(control.sync_id, ())]
        for request in [queued, *waiting]:
            if request is not None and request.run_id == control.run_id:
                request.full_resync |= control.full_resync
                return True
        return False

    async def _sync(self, sync_id: str) -> Sync | None:
        if not self._scheduler.knows(sync_id):
            await self._catalog.refresh()  # created a moment ago
        if not self._scheduler.knows(sync_id):
            return None
        return await self._store.get_sync(sync_id)

    async def _cancel_queued(self) -> None:
        queued = [
            (sync_id, request.run_id, None)
            for sync_id, request in self._scheduler.queued_runs()
            if request.run_id is not None
        ]
        for sync_id, waiting in self._waiting.items():
            queued.extend((sync_id, r.run_id, s) for r, s in waiting if r.run_id is not None)
        for sync_id, run_id, sync in queued:
            if not await self._store.cancel_requested(run_id):
                continue
            if sync is not None:
                self._waiting[sync_id] = deque(
                    (r, s) for r, s in self._waiting[sync_id] if r.run_id != run_id
                )
            elif self._scheduler.cancel(sync_id, run_id) != "queued":
                continue
            found = sync or await self._store.get_sync(sync_id)
            if found is not None:
                await _cancel_queued(self._store, self._reporter, found, run_id)

    def _hand_over(self) -> None:
        for sync_id in list(self._waiting):
            waiting = self._waiting[sync_id]
            if waiting and self._scheduler.queued_trigger(sync_id) is None:
                request, _ = waiting.popleft()
                if not self._scheduler.trigger(sync_id, request):
                    log.warning("sync %s: triggered run %s dropped", sync_id, request.run_id)
            if not waiting:
                del self._waiting[sync_id]
