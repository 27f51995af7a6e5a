"""The pipeline's store upkeep on SQLite and PostgreSQL: runs whose holder is gone are closed,
mirrored on their sync and published without being saved again; pruning bounds the store."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from service.core.metrics import Metrics
from service.core.models import RunStatus, SyncStatus
from service.core.rows import RejectedRow, SnapshotProgress
from service.pipeline.watch import Upkeep
from service.status import StatusReporter
from service.store.base import Lease, Retention, RunQuery, Store
from tests.contract.test_store import catalog, pending, run

DAY = 86400.0


class Topic:
    """Stands in for the producer: what was sent to the status topic."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, orjson.loads(value), key))


async def test_runs_of_a_gone_holder_are_reported_without_a_second_save(store: Store) -> None:
    await catalog(store)
    gone = await store.acquire_lease("1", "gone", -1)  # its holder died: the lease expired
    assert gone is not None
    await store.save_run(run(1, 0, status=RunStatus.PROCESSING), lease=Lease("1", "gone", gone))
    await store.write_pending([pending("a")])
    # Another replica holds the sync now: saving the closed run again would be refused.
    assert await store.acquire_lease("1", "alive", 60) is not None

    topic, metrics, notified = Topic(), Metrics(), []
    reporter = StatusReporter(store, topic, "status", metrics)  # type: ignore[arg-type]
    upkeep = Upkeep(store, reporter, notified.extend, Retention())
    assert await upkeep.close_orphaned_runs() == 1

    ((name, event, key),) = topic.sent
    assert (name, key) == ("status", b"1")
    assert event["type"] == "sync.run.interrupted"
    assert event["data"]["id"] == "1" and event["data"]["syncId"] == "1"
    assert (await store.get_sync("1")).status == SyncStatus.INTERRUPTED  # type: ignore[union-attr]
    assert metrics.runs.labels("interrupted")._value.get() == 1
    assert notified == ["1"]  # its rows are still pending and wait for the next run
    assert await store.pending_counts() == {"1": 1}
    runs, _ = await store.list_runs(RunQuery("1", limit=5))
    assert [(r.id, r.status) for r in runs] == [("1", RunStatus.INTERRUPTED)]
    assert await upkeep.close_orphaned_runs() == 0 and len(topic.sent) == 1


async def test_prune_runs_when_due_and_bounds_what_is_kept(store: Store) -> None:
    await catalog(store)
    for i in range(1, 6):
        await store.save_run(run(i, i, status=RunStatus.SUCCESS))
    await store.write_pending([], SnapshotProgress(rejected=[RejectedRow("1", "bad", b"{}")]))
    reporter = StatusReporter(store, None, "status", Metrics())
    upkeep = Upkeep(
        store,
        reporter,
        lambda ids: None,
        Retention(runs_seconds=10 * 365 * DAY, runs_per_sync=2, rejected_seconds=0),
        first_prune_seconds=0,
        prune_seconds=3600,
        orphan_seconds=3600,
    )
    await asyncio.sleep(0.01)  # rejected rows older than a retention of 0 s
    await upkeep.tick()  # due at once: pruned
    runs, _ = await store.list_runs(RunQuery("1", limit=10))
    assert sorted(r.id for r in runs) == ["4", "5"]
    assert await store.list_rejected("1", limit=5, offset=0) == ([], False)

    for i in range(6, 9):
        await store.save_run(run(i, i, status=RunStatus.SUCCESS))
    await upkeep.tick()  # not due again for an hour: nothing pruned
    runs, _ = await store.list_runs(RunQuery("1", limit=10))
    assert len(runs) == 5
    assert (await upkeep.prune())["runs"] == 3
