"""The runner holds a sync's lease by heartbeat and stops when another replica takes it."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.core.interfaces import RunRequest, SystemClock
from service.core.models import RunStatus, Sync, SyncRun
from service.destinations.registry import DestinationContext, open_destination
from service.runner.retry import RetryPolicy
from service.runner.runner import SyncRunner
from service.store.base import RunQuery
from service.store.sqlite import SqliteStore
from tests.integration.test_runner_webhook import Harness, user
from tests.support import LOCAL_ONLY, Receiver, wait_for


class SavingReporter:
    """Saves each run state as the service's reporter does, and remembers it."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.statuses: list[str] = []

    async def report(self, sync: Sync, run: SyncRun) -> None:
        await self.store.save_run(run)
        self.statuses.append(run.status.value)


@pytest.fixture
async def harness(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Harness]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    h = Harness(store, receiver)
    reporter = SavingReporter(store)
    h.reporter = reporter  # type: ignore[assignment]
    h.runner = SyncRunner(
        store,
        functools.partial(open_destination, context=DestinationContext("127.0.0.1:9", LOCAL_ONLY)),
        reporter,
        h.metrics,
        SystemClock(),
        RetryPolicy(max_attempts=1, base_delay=0.01, max_delay=0.05),
        lease_ttl=2.0,
        lease_renew=0.05,
    )
    yield h
    await h.runner.close()
    await store.close()


async def test_a_run_keeps_its_lease_while_it_lasts(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1)])
    harness.receiver.delay = 0.5  # longer than several heartbeats
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert harness.receiver.ops() == [("added", "1")]
    assert await harness.store.acquire_lease(harness.sync.id, "other", 60) is not None  # freed


async def test_a_run_whose_lease_is_taken_stops_without_writing(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1), user(2)])
    harness.receiver.delay = 60  # the send hangs until the run is stopped
    task = asyncio.create_task(harness.run())
    await wait_for(lambda: bool(harness.receiver.requests), what="the send to start")
    # Another replica takes the sync over (as if this one had stalled past its lease).
    async with harness.store._d.tx() as conn:  # type: ignore[attr-defined]
        taken = await conn.execute(
            "UPDATE sync_leases SET owner = 'other', token = token + 1, expires_at = ? "
            "WHERE sync_id = ?",
            time.time() + 60,
            harness.sync.id,
        )
    assert taken == 1

    run = await task  # ends on its own, not with an exception
    assert run.status is RunStatus.INTERRUPTED
    assert "lease" in (run.error or "")
    assert "interrupted" not in harness.reporter.statuses  # its final state was refused
    (stored,), _ = await harness.store.list_runs(RunQuery(harness.sync.id))
    assert stored.status is RunStatus.PROCESSING  # left for the new holder to close
    assert await harness.store.pending_counts() == {harness.sync.id: 2}
    # The stopped run released only its own lease: the other replica still holds it.
    assert await harness.store.acquire_lease(harness.sync.id, "third", 60) is None


async def test_a_cancelled_run_still_ends_cancelled(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1)])
    harness.receiver.delay = 60
    request = RunRequest("test")
    task = asyncio.create_task(harness.runner.run(harness.sync, request))
    await wait_for(lambda: bool(harness.receiver.requests), what="the send to start")
    request.cancelled = True
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert harness.reporter.statuses[-1] == "cancelled"
    assert await harness.store.acquire_lease(harness.sync.id, "other", 60) is not None
