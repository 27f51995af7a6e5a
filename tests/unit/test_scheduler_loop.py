"""The Scheduler with an injected clock: each schedule type starts runs when it should."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from service.core.interfaces import RunRequest
from service.core.models import RunStatus, Sync, SyncRun
from service.scheduler import Scheduler

START = datetime(2024, 5, 6, 10, 2, 30, tzinfo=UTC).timestamp()  # a Monday


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


class RecordingExecutor:
    def __init__(self, clock: FakeClock, status: RunStatus = RunStatus.SUCCESS) -> None:
        self.clock = clock
        self.status = status
        self.runs: list[tuple[str, str, float]] = []

    async def run(self, sync: Sync, request: RunRequest) -> SyncRun:
        self.runs.append((sync.id, request.reason, self.clock.now))
        return SyncRun(id=str(len(self.runs)), sync_id=sync.id, status=self.status)


def sync(sync_id: str, schedule: dict[str, Any]) -> Sync:
    return Sync(
        id=sync_id,
        slug=f"s{sync_id}",
        model_id="1",
        destination_id="1",
        schedule=schedule,
        configuration={"mappings": [{"from": "id", "to": "id"}]},
        primary_key="id",
        referenced_columns=["id"],
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def advance(
    scheduler: Scheduler, clock: FakeClock, syncs: list[Sync], seconds: float
) -> None:
    """Move the clock on and let the scheduler look again (as its timer would)."""
    clock.now += seconds
    scheduler.set_syncs(syncs)
    await settle()


async def test_each_schedule_type_fires_when_it_should() -> None:
    clock = FakeClock()
    executor = RecordingExecutor(clock)
    scheduler = Scheduler(executor, clock)
    syncs = [
        sync("1", {"type": "cron", "schedule": {"expression": "*/5 * * * *"}}),
        sync("2", {"type": "interval", "schedule": {"interval": {"quantity": 1, "unit": "hour"}}}),
        sync(
            "3",
            {
                "type": "visual",
                "schedule": {"expressions": [{"days": {"monday": True}, "time": "10:10"}]},
            },
        ),
        sync("4", {"type": "manual"}),
        sync("5", {"type": "dbt-cloud", "schedule": {"account": {"id": "1"}, "job": {"id": "2"}}}),
        sync("6", {"type": "continuous", "schedule": {"lingerMs": 250}}),
    ]
    try:
        scheduler.set_syncs(syncs)
        await settle()
        assert [r[:2] for r in executor.runs] == [("2", "schedule")]  # never run: due now

        await advance(scheduler, clock, syncs, 120)  # 10:04:30
        assert [r[0] for r in executor.runs] == ["2"]
        await advance(scheduler, clock, syncs, 31)  # 10:05:01: the cron minute has come
        assert [r[0] for r in executor.runs] == ["2", "1"]
        await advance(scheduler, clock, syncs, 5 * 60)  # 10:10:01: visual and cron
        assert sorted(r[0] for r in executor.runs[2:]) == ["1", "3"]
        await advance(scheduler, clock, syncs, 3600)  # the interval again
        assert "2" in [r[0] for r in executor.runs[4:]]

        # Manual and dbt-cloud syncs never run on their own; a trigger runs them.
        assert not {"4", "5", "6"} & {r[0] for r in executor.runs}
        scheduler.trigger("4", RunRequest("trigger"))
        await settle()
        assert executor.runs[-1][:2] == ("4", "trigger")

        # A continuous sync runs lingerMs after rows arrive, in a window.
        before = clock.now
        scheduler.notify_pending(["6"])
        await settle()
        assert executor.runs[-1][0] == "6"
        assert executor.runs[-1][2] == before + 0.25
    finally:
        await scheduler.stop(0)


async def test_a_continuous_sync_whose_run_failed_retries_after_a_backoff() -> None:
    clock = FakeClock()
    executor = RecordingExecutor(clock, RunStatus.FAILED)
    scheduler = Scheduler(executor, clock, retry_base=10, retry_cap=40)
    syncs = [sync("1", {"type": "continuous", "schedule": {"lingerMs": 0}})]
    try:
        scheduler.set_syncs(syncs)
        scheduler.notify_pending(["1"])
        await settle()
        assert len(executor.runs) == 1
        scheduler.notify_pending(["1"])  # new rows while failing wait for the retry
        await settle()
        assert len(executor.runs) == 1
        await advance(scheduler, clock, syncs, 10)
        assert [r[1] for r in executor.runs] == ["continuous", "retry"]
        await advance(scheduler, clock, syncs, 10)  # the backoff doubled: not yet
        assert len(executor.runs) == 2
        await advance(scheduler, clock, syncs, 10)
        assert len(executor.runs) == 3
    finally:
        await scheduler.stop(0)


async def test_rows_failed_outside_a_run_wait_for_the_backoff_or_an_answering_destination() -> None:
    clock = FakeClock()
    executor = RecordingExecutor(clock)
    scheduler = Scheduler(executor, clock, retry_base=10.0)
    syncs = [sync("1", {"type": "continuous"})]
    scheduler.set_syncs(syncs)
    await settle()
    scheduler.retry_failed(["1"])
    scheduler.retry_failed(["1"])  # more failures do not pull the retry nearer nor push it off
    await advance(scheduler, clock, syncs, 5)
    assert executor.runs == []
    await advance(scheduler, clock, syncs, 5)
    assert [r[1] for r in executor.runs] == ["retry"]
    # The destination takes rows again: failed rows go at once.
    scheduler.retry_failed(["1"])
    await advance(scheduler, clock, syncs, 1)
    assert len(executor.runs) == 1
    scheduler.retry_failed(["1"], now=True)
    await settle()
    assert [r[1] for r in executor.runs] == ["retry", "retry"]
    await scheduler.stop(0)
