"""The store's contract for liveness and upkeep, on SQLite and on PostgreSQL: fenced leases,
runs of a gone holder, run requests, pruning, timeouts, ids and deletes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core.models import Model, RunStatus, Sync
from service.core.rows import RejectedRow, RowOutcomes, SnapshotProgress
from service.store.base import Lease, LeaseLost, Retention, RunControl, RunQuery, Store
from service.store.sql import ingest
from tests.contract.conftest import StoreFactory
from tests.contract.test_store import catalog, delivered, model, pending, run, sync

DAY = 86400.0


# --- leases ----------------------------------------------------------------------------------


async def test_lease_tokens_grow_with_every_acquisition(store: Store) -> None:
    await catalog(store)
    first = await store.acquire_lease("1", "a", 60)
    assert first is not None
    assert await store.acquire_lease("1", "b", 60) is None
    await store.release_lease("1", "a", first)
    second = await store.acquire_lease("1", "b", 60)
    assert second is not None and second > first
    await store.release_lease("1", "b")
    third = await store.acquire_lease("1", "a", 60)
    assert third is not None and third > second


async def test_renew_keeps_a_lease_only_for_its_holder(store: Store) -> None:
    await catalog(store)
    token = await store.acquire_lease("1", "a", -1)  # already expired, nobody took it
    assert token is not None
    assert await store.renew_lease("1", "a", token, 60) is True
    assert await store.acquire_lease("1", "b", 60) is None  # renewed: held again
    assert await store.renew_lease("1", "b", token, 60) is False
    assert await store.renew_lease("1", "a", token + 1, 60) is False
    await store.release_lease("1", "a", token + 1)  # not that acquisition: still held
    assert await store.acquire_lease("1", "b", 60) is None


async def test_writes_of_a_lost_lease_are_refused(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending("a")])
    (row,) = await store.pending_page("1", 0, 10**9, 10)
    old = await store.acquire_lease("1", "a", -1)
    assert old is not None
    lost = Lease("1", "a", old)
    started = run(7, 0, status=RunStatus.PROCESSING)
    await store.save_run(started, lease=lost)  # still a's: bound to it

    new = await store.acquire_lease("1", "b", 60)  # expired: b takes over
    assert new is not None
    with pytest.raises(LeaseLost):
        await store.record_outcomes("1", RowOutcomes(delivered=[delivered(row)]), 1.0, lease=lost)
    assert await store.pending_counts() == {"1": 1}  # nothing written
    done = started.model_copy(update={"status": RunStatus.SUCCESS})
    with pytest.raises(LeaseLost):
        await store.save_run(done)  # bound to a's lease, saved by anyone
    with pytest.raises(LeaseLost):
        await store.save_run(done, lease=lost)
    assert [r.status for r in (await store.list_runs(RunQuery("1")))[0]] == [RunStatus.PROCESSING]

    held = Lease("1", "b", new)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(row)]), 1.0, lease=held)
    assert await store.pending_counts() == {}
    await store.save_run(run(8, 1), lease=held)
    await store.save_run(run(8, 1, status=RunStatus.SUCCESS))  # bound to b's, still b's


# --- runs of a gone holder -------------------------------------------------------------------


async def test_runs_of_an_expired_lease_are_closed_as_interrupted(store: Store) -> None:
    await catalog(store)
    await store.upsert(sync("2", "second"))
    gone = await store.acquire_lease("1", "gone", -1)
    live = await store.acquire_lease("2", "alive", 60)
    assert gone is not None and live is not None
    await store.save_run(run(1, 0, status=RunStatus.PROCESSING), lease=Lease("1", "gone", gone))
    await store.save_run(run(2, 0, "2", status=RunStatus.PROCESSING), Lease("2", "alive", live))
    await store.save_run(run(3, 0, status=RunStatus.SUCCESS), lease=Lease("1", "gone", gone))
    await store.write_pending([pending("a")])

    closed = await store.close_orphaned_runs()
    assert [(r.id, r.status) for r in closed] == [("1", RunStatus.INTERRUPTED)]
    assert closed[0].finished_at is not None and closed[0].error
    statuses = {
        r.id: r.status
        for s in ("1", "2")
        for r in (await store.list_runs(RunQuery(s, limit=10)))[0]
    }
    assert statuses == {
        "1": RunStatus.INTERRUPTED,
        "2": RunStatus.PROCESSING,
        "3": RunStatus.SUCCESS,
    }
    assert await store.close_orphaned_runs() == []
    assert await store.pending_counts() == {"1": 1}  # rows stay pending


async def test_sqlite_restart_takes_over_leases_and_closes_its_runs(tmp_path: Path) -> None:
    from service.store.sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = SqliteStore(url)
    await first.open()
    await catalog(first)
    token = await first.acquire_lease("1", "before", 600)
    assert token is not None
    await first.save_run(run(1, 0, status=RunStatus.QUEUED))  # queued, never leased
    await first.save_run(run(2, 0, status=RunStatus.PROCESSING), Lease("1", "before", token))
    await first.close()  # as if the process died: the lease is still written as held

    again = SqliteStore(url)
    await again.open()
    try:
        taken = await again.acquire_lease("1", "after", 15)
        assert taken is not None and taken > token  # at once, not after 600 s
        closed = await again.close_orphaned_runs()
        assert sorted(r.id for r in closed) == ["1", "2"]
        assert {r.status for r in closed} == {RunStatus.INTERRUPTED}
    finally:
        await again.close()


async def test_sqlite_file_is_used_by_one_process_only(tmp_path: Path) -> None:
    from service.store.sqlite import SqliteStore

    path = tmp_path / "store.db"
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    code = (
        "import asyncio, sys\n"
        "from service.store.base import StoreUnavailable\n"
        "from service.store.sqlite import SqliteStore\n"
        f"store = SqliteStore('sqlite:///{path}')\n"
        "async def main():\n"
        "    await store.open()\n"
        "    await store.close()\n"
        "try:\n"
        "    asyncio.run(main())\n"
        "except StoreUnavailable as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    try:
        other = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True
        )
    finally:
        await store.close()
    assert other.returncode == 3, other.stderr
    (line,) = other.stdout.splitlines()
    assert str(path) in line and "another process" in line
    after = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert after.returncode == 0, after.stdout + after.stderr  # free once closed


# --- run requests ----------------------------------------------------------------------------


async def test_run_requests_are_taken_once_by_the_replica_that_may_run_them(
    store: Store, open_store: StoreFactory
) -> None:
    await catalog(store)
    await store.upsert(sync("2", "second"))
    other = await open_store()
    await store.request_run("1", "11", True)
    await store.request_run("2", None, False)
    assert await store.acquire_lease("2", "b", 60) is not None

    assert await store.take_run_requests("a") == [RunControl("1", "11", True)]
    assert await other.take_run_requests("a") == []  # taken already; sync 2 is b's
    assert await other.take_run_requests("b") == [RunControl("2", None, False)]
    assert await store.take_run_requests("b") == []


async def test_cancel_requests_last_until_the_run_ends(store: Store) -> None:
    await catalog(store)
    assert await store.cancel_requested("5") is False
    await store.request_cancel("1", "5")
    assert await store.cancel_requested("5") is True
    assert await store.take_run_requests("a") == []  # a cancel is no trigger
    await store.save_run(run(5, 0, status=RunStatus.PROCESSING))
    assert await store.cancel_requested("5") is True
    await store.save_run(run(5, 0, status=RunStatus.CANCELLED))
    assert await store.cancel_requested("5") is False


# --- pruning ---------------------------------------------------------------------------------


async def test_prune_drops_what_retention_no_longer_keeps(store: Store) -> None:
    await catalog(store)
    await store.upsert(sync("2", "second"))
    now = time.time()
    days_ago = (now - run(0, 0).created_at.timestamp()) / DAY  # the helpers' runs are from 2024
    for i in range(1, 6):
        await store.save_run(run(i, i, status=RunStatus.SUCCESS))
    await store.save_run(run(6, 0, status=RunStatus.PROCESSING))  # open: never pruned
    await store.save_run(run(7, 0, "2", status=RunStatus.SUCCESS))
    refused = [RejectedRow("1", "no key", b"{}")]
    await store.write_pending([], SnapshotProgress(rejected=refused))
    await store.write_pending([], SnapshotProgress(keys=[("1", "s1", "a"), ("1", "s1", "b")]))
    await store.request_run("1", None, False)

    # Keep runs for longer than they are old but only 3 per sync; the rest is young.
    keep = Retention(runs_seconds=(days_ago + 1) * DAY, runs_per_sync=3)
    counts = await store.prune(keep, now=now)
    assert counts == {"runs": 2, "rejected": 0, "snapshotKeys": 0, "snapshots": 0, "requests": 0}
    left = (await store.list_runs(RunQuery("1", limit=10)))[0]
    assert sorted(r.id for r in left) == ["3", "4", "5", "6"]  # newest 3 finished + the open one

    later = now + 8 * DAY  # a week on: rejected rows, the open snapshot and requests expire
    counts = await store.prune(Retention(runs_seconds=(days_ago + 9) * DAY), now=later)
    assert counts == {"runs": 0, "rejected": 1, "snapshotKeys": 2, "snapshots": 0, "requests": 1}
    assert await store.list_rejected("1", limit=5, offset=0) == ([], False)
    assert await store.open_snapshots() == []
    assert await store.take_run_requests("a") == []
    # The abandoned snapshot counts as closed: its closing message arriving now removes nothing.
    await store.write_pending([], SnapshotProgress(keys=[("1", "s1", "a")], closed=[("1", "s1")]))
    assert await store.pending_counts() == {}

    counts = await store.prune(Retention(), now=later + 31 * DAY)  # closed a month ago: forgot
    assert counts["snapshots"] == 1
    assert sorted(r.id for r in (await store.list_runs(RunQuery("1", limit=10)))[0]) == ["6"]


async def test_closing_a_snapshot_plans_removals_page_by_page(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "ABSENT_PAGE", 3)
    await catalog(store)
    keys = [f"k{i:02}" for i in range(10)]
    await store.write_pending([pending(k) for k in keys])
    rows = await store.pending_page("1", 0, 10**9, 100)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
    last = SnapshotProgress(keys=[("1", "s", "k04")], closed=[("1", "s")])
    await store.write_pending([pending("k04")], last)
    page = await store.pending_page("1", 0, 10**9, 100)
    assert sorted(r.key for r in page) == [k for k in keys if k != "k04"]
    assert {r.op for r in page} == {"delete"}
    assert len({r.seq for r in page}) == 9


# --- timeouts --------------------------------------------------------------------------------


async def test_a_busy_sqlite_store_raises_instead_of_hanging(tmp_path: Path) -> None:
    from service.store.sqlite import SqliteStore

    path = tmp_path / "store.db"
    store = SqliteStore(f"sqlite:///{path}", timeout=0.2)
    await store.open()
    try:
        blocker = await asyncio.to_thread(
            sqlite3.connect, str(path), isolation_level=None, check_same_thread=False
        )
        try:
            await asyncio.to_thread(blocker.execute, "BEGIN IMMEDIATE")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await store.upsert(model())
        finally:
            await asyncio.to_thread(blocker.close)
        await store.upsert(model())  # free again: the store was left clean
        assert [m.id for m in await store.list(Model)] == ["1"]
    finally:
        await store.close()


async def test_a_postgres_store_that_is_down_raises_at_once(postgres_url: str) -> None:
    from service.store.postgres import PostgresStore

    store = PostgresStore("postgresql://sync:sync@127.0.0.1:1/sync", timeout=1)
    with pytest.raises(ConnectionError, match="cannot connect"):
        await store.open()
    # A statement running longer than the timeout is cancelled by the server.
    slow = PostgresStore(postgres_url, timeout=0.5)
    await slow.open()
    try:
        with pytest.raises(Exception, match="statement timeout"):
            await slow._rows("SELECT pg_sleep(5)")  # type: ignore[attr-defined]
        assert await slow.ping()
    finally:
        await slow.close()


# --- ids, deletes, damaged documents -----------------------------------------------------------


async def test_ids_are_never_given_out_again(store: Store) -> None:
    first = await store.create(model(slug="one"))
    second = await store.create(model(slug="two"))
    assert await store.delete(Model, second.id, "1") is True
    third = await store.create(model(slug="three"))
    assert int(third.id) > int(second.id) > int(first.id)


async def test_deleting_a_sync_drops_everything_hanging_off_it(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending("a")], SnapshotProgress(keys=[("1", "s", "a")]))
    await store.write_pending([], SnapshotProgress(rejected=[RejectedRow("1", "no key", b"{}")]))
    token = await store.acquire_lease("1", "a", 60)
    assert token is not None
    await store.save_run(run(1, 0), lease=Lease("1", "a", token))
    await store.request_run("1", None, False)
    await store.request_cancel("1", "1")

    assert await store.delete(Sync, "1", "1") is True
    assert await store.pending_counts() == {}
    assert await store.open_snapshots() == []
    assert await store.list_rejected("1", limit=5, offset=0) == ([], False)
    assert await store.cancel_requested("1") is False
    assert await store.take_run_requests("b") == []
    assert await store.acquire_lease("1", "b", 60) == 1  # a new lease: nothing left of the old


async def test_rows_and_runs_are_read_within_their_workspace(store: Store) -> None:
    await catalog(store)
    await store.save_run(run(1, 0))
    await store.write_pending([pending("a")])
    await store.write_pending([], SnapshotProgress(rejected=[RejectedRow("1", "no key", b"{}")]))
    assert len((await store.list_runs(RunQuery("1", workspace_id="1")))[0]) == 1
    assert await store.list_runs(RunQuery("1", workspace_id="2")) == ([], False)
    page = dict(failed_only=False, limit=5, offset=0)
    assert len((await store.list_pending("1", **page, workspace_id="1"))[0]) == 1
    assert await store.list_pending("1", **page, workspace_id="2") == ([], False)
    assert len((await store.list_rejected("1", limit=5, offset=0, workspace_id="1"))[0]) == 1
    assert await store.list_rejected("1", limit=5, offset=0, workspace_id="2") == ([], False)


async def test_a_damaged_item_is_left_out_of_lists(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.upsert(model("1", "one"))
    await store.upsert(model("2", "two"))
    await store.upsert(model("3", "three"))
    deep: Any = {"id": "2"}
    for _ in range(250):
        deep = {"nested": deep}
    damaged = orjson.dumps(deep).decode()
    async with store._d.tx() as conn:  # type: ignore[attr-defined]
        await conn.execute("UPDATE models SET doc = ? WHERE id = ?", damaged, "2")
    assert [m.id for m in await store.list(Model)] == ["1", "3"]
    assert "Model 2" in caplog.text
    assert await store.get(Model, "2") is None


async def test_list_page_filters_and_pages_in_sql(store: Store) -> None:
    for i in range(1, 6):
        await store.upsert(model(str(i), f"m{i}", source_id="9" if i % 2 else None))
    page, more = await store.list_page(Model, "1", limit=2, offset=0)
    assert ([m.id for m in page], more) == (["1", "2"], True)
    page, more = await store.list_page(Model, "1", limit=2, offset=4)
    assert ([m.id for m in page], more) == (["5"], False)
    page, _ = await store.list_page(Model, "1", filters={"source_id": "9"})
    assert [m.id for m in page] == ["1", "3", "5"]
    assert (await store.list_page(Model, "2"))[0] == []


async def test_runs_stored_by_schema_version_7_carry_over(open_store: StoreFactory) -> None:
    """Version 8 gives runs a status column, filled from each run's document."""
    old = await open_store(schema_upto=7)
    async with old._d.tx() as conn:  # type: ignore[attr-defined]
        for run_id, status in ((1, RunStatus.SUCCESS), (2, RunStatus.PROCESSING)):
            record = run(run_id, run_id, status=status)
            await conn.execute(
                "INSERT INTO sync_runs (id, sync_id, created_at, doc) VALUES (?, ?, ?, ?)",
                run_id,
                "1",
                record.created_at.timestamp(),
                record.model_dump_json(),
            )
    await old.close()

    store = await open_store()
    rows = await store._rows("SELECT id, status FROM sync_runs ORDER BY id")  # type: ignore[attr-defined]
    assert [tuple(r) for r in rows] == [(1, "success"), (2, "processing")]
    listed, _ = await store.list_runs(RunQuery("1"))
    assert [r.id for r in listed] == ["2", "1"]
    await store.save_run(run(2, 2, status=RunStatus.SUCCESS))  # no lease recorded: no fence
    assert (await store.list_runs(RunQuery("1")))[0][0].status is RunStatus.SUCCESS
