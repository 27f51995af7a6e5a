"""RunControl for the API: runs are queued in the scheduler and recorded by the reporter."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from service.core.interfaces import RunRequest
from service.core.models import RunStatus, Sync, SyncRun
from service.pipeline.catalog import CatalogView
from service.scheduler import Scheduler
from service.status import StatusReporter
from service.store.base import RunQuery, Store

#: How long a trigger made while the service starts waits for the pipeline.
START_WAIT_SECONDS = 30.0


@dataclass(slots=True)
class _Parts:
    store: Store
    catalog: CatalogView
    scheduler: Scheduler
    reporter: StatusReporter


class PipelineNotRunning(RuntimeError):
    """The API asked for a run before the pipeline started (or after it stopped)."""


class PipelineRunControl:
    """The API holds this from the start; the pipeline attaches its parts once it runs."""

    def __init__(self) -> None:
        self._parts: _Parts | None = None
        self._attached = asyncio.Event()
        self._lock = asyncio.Lock()

    def attach(
        self, store: Store, catalog: CatalogView, scheduler: Scheduler, reporter: StatusReporter
    ) -> None:
        self._parts = _Parts(store, catalog, scheduler, reporter)
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
            request = RunRequest(
                "trigger",
                requested_at=run.created_at,
                run_id=run.id,
                full_resync=full_resync,
                reset_cdc=reset_cdc,
            )
            p.scheduler.trigger(sync.id, request)
            return run.id

    async def cancel(self, sync: Sync, run_id: str) -> bool:
        p = await self._running()
        async with self._lock:
            outcome = p.scheduler.cancel(sync.id, run_id)
            if outcome != "queued":
                return outcome == "running"
            runs, _ = await p.store.list_runs(RunQuery(sync.id, run_id=run_id, limit=1))
            if runs:
                run = runs[0]
                run.status = RunStatus.CANCELLED
                run.finished_at = datetime.now(UTC)
                run.error = "cancelled through the API before it started"
                await p.reporter.report(sync, run)
            return True
