"""The Scheduler tries again a sync whose lease another replica held, without a new event."""

from __future__ import annotations

from service.core.interfaces import RunRequest
from service.core.models import Sync, SyncRun
from service.scheduler import Scheduler
from tests.unit.test_scheduler_loop import FakeClock, RecordingExecutor, advance, settle, sync


class BusyOnceExecutor(RecordingExecutor):
    """The first run finds the lease held elsewhere (None), later ones run."""

    async def run(self, sync: Sync, request: RunRequest) -> SyncRun | None:
        result = await super().run(sync, request)
        return None if len(self.runs) == 1 else result


async def test_a_sync_whose_lease_was_busy_is_tried_again_after_a_short_delay() -> None:
    clock = FakeClock()
    executor = BusyOnceExecutor(clock)
    scheduler = Scheduler(executor, clock, lease_retry=3)
    syncs = [sync("1", {"type": "continuous", "schedule": {"lingerMs": 0}})]
    try:
        scheduler.set_syncs(syncs)
        scheduler.notify_pending(["1"])
        await settle()
        assert len(executor.runs) == 1  # busy: another replica runs it
        await advance(scheduler, clock, syncs, 2)
        assert len(executor.runs) == 1
        await advance(scheduler, clock, syncs, 1)  # no new event, the delay passed
        assert [r[1] for r in executor.runs] == ["continuous", "retry"]
        await advance(scheduler, clock, syncs, 10)
        assert len(executor.runs) == 2  # it ran: nothing more to try
    finally:
        await scheduler.stop(0)
