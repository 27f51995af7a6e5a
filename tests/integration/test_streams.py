"""Streams: rows of continuous syncs go from memory to a real webhook receiver and are written
once, as their outcome, into a real store (SQLite, and PostgreSQL where marked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from service.core.interfaces import SystemClock
from service.core.models import RunStatus, Sync
from service.core.rows import MAYBE_HELD, PendingWrite
from service.router import build_routes
from service.runner.stream import Streams, StreamTicket
from service.store.base import Store
from service.store.sqlite import SqliteStore
from tests.contract.conftest import make_store
from tests.integration.test_runner_webhook import Harness as RunnerHarness
from tests.support import Receiver, change, wait_for


class Harness(RunnerHarness):
    """The runner harness plus the streams in front of it."""

    def __init__(self, store: Store, receiver: Receiver, **streams: Any) -> None:
        super().__init__(store, receiver)  # type: ignore[arg-type]
        self.notified: list[str] = []
        self.streams = Streams(
            store,
            self.runner,
            self.metrics,
            SystemClock(),
            notify_pending=self.notified.extend,
            **streams,
        )

    async def setup(self, mode: str = "upsert", batch_size: int = 50) -> None:  # type: ignore[override]
        """A continuous sync of two columns, `id` and `v`, in the streams."""
        await super().setup(
            mode,
            mappings=[{"from": "id", "to": "id"}, {"from": "v", "to": "v"}],
            schedule={"type": "continuous"},
            batchSize=batch_size,
        )
        self.streams.set_syncs([self.sync])

    def writes(self, op: str, rows: list[dict[str, Any]], *more: Any) -> list[PendingWrite]:
        """The rows of one fetch: an event of `op` and `rows`, then the (op, rows) in `more`."""
        events = [change({"modelId": "1", "op": o, "rows": r}) for o, r in ((op, rows), *more)]
        (part,) = self.ingest.prepare(events, build_routes([self.sync]))
        return part.writes

    async def take(self, op: str, rows: list[dict[str, Any]]) -> tuple[int, StreamTicket | None]:
        """Hands rows over as the consumer does; writes what comes back for the store."""
        to_store, ticket = await self.streams.take(self.writes(op, rows), set())
        if to_store:
            await self.store.write_pending(to_store)
        return len(to_store), ticket

    async def close(self) -> None:
        await self.streams.close()
        await self.runner.close()

    def latest(self) -> dict[str, Any]:
        """What the receiver holds per key: the last version it accepted."""
        return {r["key"]: r["data"]["v"] for r in self.receiver.rows}


def rows(n: int, v: int = 0, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "v": v} for i in range(start, start + n)]


HarnessFactory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def sqlite_harnesses(tmp_path: Path, receiver: Receiver) -> AsyncIterator[HarnessFactory]:
    """Harnesses over one SQLite store, with the Streams options given."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    made: list[Harness] = []

    async def make(**streams: Any) -> Harness:
        made.append(Harness(store, receiver, **streams))
        return made[-1]

    yield make
    for h in made:
        await h.close()
    await store.close()


@pytest.fixture
async def sqlite_harness(sqlite_harnesses: HarnessFactory) -> Harness:
    return await sqlite_harnesses()


@pytest.fixture
async def harness(open_store: Any, receiver: Receiver) -> AsyncIterator[Harness]:
    """On SQLite and on PostgreSQL."""
    h = Harness(await open_store(), receiver)
    yield h
    await h.close()


async def test_rows_go_from_memory_and_are_written_once_as_what_the_destination_holds(
    harness: Harness,
) -> None:
    await harness.setup()
    stored, ticket = await harness.take("upsert", rows(120))
    assert stored == 0 and ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert harness.latest() == {str(i): 0 for i in range(120)}
    assert await harness.store.pending_counts() == {}
    held = await harness.store.held("7", [str(i) for i in range(120)])
    assert set(held) == {str(i) for i in range(120)}
    assert all(synced is not None and not pending for synced, pending in held.values())

    # The same rows again: the destination holds them, nothing is sent nor written.
    requests = len(harness.receiver.requests)
    stored, ticket = await harness.take("upsert", rows(120))
    assert stored == 0 and ticket is not None and ticket.done.done()
    assert len(harness.receiver.requests) == requests
    assert harness.metrics.registry.get_sample_value("sync_rows_unchanged_total") == 120

    # A run record covers the stream: queued, processing, reporting, success.
    await wait_for(lambda: "success" in harness.reporter.statuses, what="the run to end")
    assert harness.reporter.statuses == ["queued", "processing", "reporting", "success"]


async def test_a_refused_row_stays_pending_with_its_reason_and_a_run_sends_it(
    harness: Harness,
) -> None:
    await harness.setup()
    harness.receiver.replies = [(200, {"rejected": [{"key": "3", "error": "bad email"}]}, {})]
    _, ticket = await harness.take("upsert", rows(10))
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert "3" not in harness.latest()
    assert await harness.store.pending_counts() == {"7": 1}
    (row,), _ = await harness.store.list_pending("7", failed_only=True, limit=10, offset=0)
    assert row.key == "3" and "bad email" in (row.error or "") and row.attempts == 1
    assert harness.notified == ["7"]

    # While it is pending, a newer version of it goes to the store too, behind it.
    stored, _ = await harness.take("upsert", [{"id": 3, "v": 1}])
    assert stored == 1
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert harness.latest()["3"] == 1
    assert await harness.store.pending_counts() == {}


async def test_a_full_queue_sends_the_rest_to_the_store_and_everything_converges(
    sqlite_harnesses: HarnessFactory,
) -> None:
    h = await sqlite_harnesses(queue_bytes=20_000)
    await h.setup(batch_size=20)
    h.receiver.delay = 3.0  # a stalled endpoint: the queue fills and stays full
    tickets = []
    stored_total = 0
    for v in range(3):
        for start in range(0, 300, 100):
            stored, ticket = await h.take("upsert", rows(100, v=v, start=start))
            stored_total += stored
            assert ticket is not None
            tickets.append(ticket)
    assert stored_total > 0  # the queue's budget sent rows to the store
    h.receiver.delay = 0.0
    await asyncio.wait_for(asyncio.gather(*(t.done for t in tickets)), 30)
    while await h.store.pending_counts():
        await h.run()
    # Key by key, the destination ends with the model's last version.
    assert h.latest() == {str(i): 2 for i in range(300)}


async def test_versions_of_a_key_reach_the_destination_in_order(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.setup(batch_size=7)
    h.receiver.delay = 0.01
    tickets = []
    for v in range(20):
        _, ticket = await h.take("upsert", rows(30, v=v))
        assert ticket is not None
        tickets.append(ticket)
    await asyncio.wait_for(asyncio.gather(*(t.done for t in tickets)), 30)
    seen: dict[str, list[int]] = {}
    for row in h.receiver.rows:
        seen.setdefault(row["key"], []).append(row["data"]["v"])
    assert all(versions == sorted(versions) for versions in seen.values())
    assert h.latest() == {str(i): 19 for i in range(30)}


async def test_a_flush_stores_what_memory_holds_and_the_next_run_sends_it(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    await h.setup(batch_size=10)
    h.receiver.delay = 30.0  # the endpoint hangs
    _, ticket = await h.take("upsert", rows(40))
    assert ticket is not None
    await wait_for(lambda: len(h.receiver.requests) >= 1, what="a request to start")
    await h.streams.flush(0.2)
    await asyncio.wait_for(ticket.done, 5)  # every row is in the store now
    assert await h.store.pending_counts() == {"7": 40}
    await h.streams.close()
    assert h.reporter.statuses[-1] == "interrupted"
    h.receiver.delay = 0.0
    await h.run()
    assert h.latest() == {str(i): 0 for i in range(40)}


async def test_a_delete_of_a_held_row_is_removed_through_the_store(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.setup(mode="mirror")
    _, ticket = await h.take("upsert", rows(5))
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    stored, _ = await h.take("delete", [{"id": 2}, {"id": 99}])
    assert stored == 1  # 99 was never held: nothing to remove
    await h.run()
    assert ("removed", "2") in h.receiver.ops()
    assert ("removed", "99") not in h.receiver.ops()
    # Once sent, the key streams again.
    await wait_for(lambda: not h.streams._streams["7"].overflow, what="the key to stream again")
    stored, ticket = await h.take("upsert", [{"id": 2, "v": 5}])
    assert stored == 0 and ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert h.receiver.ops()[-1] == ("added", "2")


async def test_a_key_removed_while_its_version_was_in_flight_is_sent_again_later(
    sqlite_harness: Harness,
) -> None:
    """Key 5's delete takes the store path while its upsert is in flight, and that flight
    lands afterwards. A run sends the removal. The same version of key 5 read afterwards is
    sent again, not dropped against what the flight's landing left in the cache."""
    h = sqlite_harness
    await h.setup(mode="mirror")
    h.receiver.delay = 0.5
    _, ticket = await h.take("upsert", [{"id": 5, "v": 1}])
    assert ticket is not None
    await wait_for(lambda: len(h.receiver.requests) >= 1, what="the upsert to be sent")
    stored, _ = await h.take("delete", [{"id": 5}])  # written once the flight has landed
    assert stored == 1
    await asyncio.wait_for(ticket.done, 10)
    h.receiver.delay = 0.0
    await h.run()
    assert h.receiver.ops() == [("added", "5"), ("removed", "5")]
    await wait_for(lambda: not h.streams._streams["7"].overflow, what="the key to stream again")

    stored, ticket = await h.take("upsert", [{"id": 5, "v": 1}])
    if ticket is not None:
        await asyncio.wait_for(ticket.done, 10)
    if stored:
        await h.run()
    assert h.receiver.ops()[-1] == ("added", "5")
    assert await h.store.pending_counts() == {}


async def test_a_newer_version_kept_pending_for_a_refused_flight_survives_a_flush(
    sqlite_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination refuses key 5's version in flight while a newer version of it waits
    in the queue: the newer one is to be kept pending in its place. A flush (a rebalance)
    cancels that record while it waits for the store. The newer version is still what the
    store keeps, and what a run then sends, not the refused flight's older one."""
    h = sqlite_harness
    await h.setup(mode="mirror")
    h.receiver.replies = [(200, {"rejected": [{"key": "5", "error": "row locked"}]}, {})]
    h.receiver.delay = 0.3
    store_free = asyncio.Event()
    record_streamed = h.store.record_streamed

    async def slow_record(*args: Any) -> list[str]:
        await store_free.wait()
        return await record_streamed(*args)

    monkeypatch.setattr(h.store, "record_streamed", slow_record)
    _, first = await h.take("upsert", [{"id": 5, "v": 1}])
    await wait_for(lambda: len(h.receiver.requests) >= 1, what="the first version to be sent")
    _, second = await h.take("upsert", [{"id": 5, "v": 2}])  # waits behind the flight
    await asyncio.sleep(0.6)  # refused; the record of that waits for the store
    assert second is not None
    assert not second.done.done()  # the newer version is not stored yet: no commit
    flush = asyncio.create_task(h.streams.flush(0.2))
    await asyncio.sleep(0.5)  # the flush cancelled what was in flight
    store_free.set()
    await asyncio.wait_for(flush, 10)
    for ticket in (first, second):
        assert ticket is not None
        await asyncio.wait_for(ticket.done, 10)

    h.receiver.delay = 0.0
    await h.run()
    assert h.latest() == {"5": 2}
    assert await h.store.pending_counts() == {}


async def test_a_version_taken_while_a_refused_flight_is_recorded_waits_in_the_store(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination refuses key 5's version in flight; while that refusal is written, a
    newer version of the key arrives. The store then holds the refused version pending for a
    retry run, so the newer one goes there too, behind it, instead of streaming: one path at a
    time holds versions of a key, and the run sends the newest."""
    h = harness
    await h.setup(mode="mirror")
    h.receiver.replies = [(200, {"rejected": [{"key": "5", "error": "row locked"}]}, {})]
    store_free = asyncio.Event()
    recording = asyncio.Event()
    record_streamed = h.store.record_streamed

    async def slow_record(*args: Any) -> list[str]:
        recording.set()
        await store_free.wait()
        return await record_streamed(*args)

    monkeypatch.setattr(h.store, "record_streamed", slow_record)
    _, first = await h.take("upsert", [{"id": 5, "v": 1}])
    await asyncio.wait_for(recording.wait(), 10)  # refused; the record waits for the store
    second = asyncio.create_task(h.take("upsert", [{"id": 5, "v": 2}]))
    await asyncio.sleep(0.2)
    store_free.set()
    stored, ticket = await asyncio.wait_for(second, 10)
    assert stored == 1 and first is not None
    await asyncio.wait_for(first.done, 10)
    if ticket is not None:
        await asyncio.wait_for(ticket.done, 10)
    await asyncio.sleep(0.3)
    assert len(h.receiver.requests) == 1 and h.receiver.rows == []  # nothing streamed since

    await h.run()
    assert h.latest() == {"5": 2}
    assert await h.store.pending_counts() == {}


async def test_a_version_queued_behind_a_flight_another_writer_made_pending_goes_to_the_store(
    harness: Harness,
) -> None:
    """While key 5's version is in flight, another writer (a full resync) makes the key
    pending, and a newer version of it waits in the queue. The flight's record leaves the key
    pending, so the queued version goes to the store behind it rather than streaming."""
    h = harness
    await h.setup(mode="mirror")
    h.receiver.delay = 1.0  # the flight stays out while the steps below run
    _, first = await h.take("upsert", [{"id": 5, "v": 1}])
    await wait_for(lambda: len(h.receiver.requests) >= 1, what="the first version to be sent")
    await h.store.write_pending(h.writes("upsert", [{"id": 5, "v": 1}]))
    stored, second = await h.take("upsert", [{"id": 5, "v": 2}])
    assert stored == 0  # queued behind the flight: nothing said the key was pending
    for ticket in (first, second):
        assert ticket is not None
        await asyncio.wait_for(ticket.done, 10)
    await asyncio.sleep(0.5)
    assert len(h.receiver.requests) == 1  # the queued version was not streamed

    h.receiver.delay = 0.0
    await h.run()
    assert h.latest() == {"5": 2}
    assert await h.store.pending_counts() == {}


async def test_a_slow_destination_that_keeps_up_holds_the_consumer_back_instead(
    sqlite_harnesses: HarnessFactory,
) -> None:
    h = await sqlite_harnesses(queue_bytes=20_000)
    await h.setup(batch_size=20)
    h.receiver.delay = 0.05  # slow, but every batch comes back
    tickets = []
    for start in range(0, 600, 100):
        stored, ticket = await h.take("upsert", rows(100, start=start))
        assert stored == 0  # the consumer waited for room instead
        assert ticket is not None
        tickets.append(ticket)
    await asyncio.wait_for(asyncio.gather(*(t.done for t in tickets)), 30)
    assert h.latest() == {str(i): 0 for i in range(600)}
    assert await h.store.pending_counts() == {}


async def test_a_delete_after_a_version_not_recorded_as_sent_is_sent_as_a_removal(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    await h.setup(mode="mirror")
    # Read again after a process stopped before recording: it may have sent key 5 already.
    writes = h.writes("upsert", [{"id": 5, "v": 1}], ("delete", [{"id": 5}]))
    to_store, ticket = await h.streams.take(writes, set(), set())
    assert to_store == [] and ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert h.receiver.ops() == [("removed", "5")]
    assert h.receiver.rows[0]["data"] == {"id": 5, "v": 1}
    assert await h.store.held("7", ["5"]) == {}
    # A delete of a key never read at all sends nothing.
    _, ticket = await h.take("delete", [{"id": 6}])
    assert ticket is not None and ticket.done.done()
    assert h.receiver.ops() == [("removed", "5")]


async def test_a_refused_removal_of_a_key_maybe_held_stays_pending_and_a_run_sends_it(
    harness: Harness,
) -> None:
    """Read again after a process stopped before recording: key 5 may be at the destination,
    and its removal is refused. It stays pending, with the reason, and a run sends it."""
    h = harness
    await h.setup(mode="mirror")
    h.receiver.replies = [(200, {"rejected": [{"key": "5", "error": "row locked"}]}, {})]
    writes = h.writes("upsert", [{"id": 5, "v": 1}], ("delete", [{"id": 5}]))
    to_store, ticket = await h.streams.take(writes, set(), set())
    assert to_store == [] and ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert h.receiver.rows == []
    (row,), _ = await h.store.list_pending("7", failed_only=True, limit=10, offset=0)
    assert (row.key, row.op, row.attempts) == ("5", "delete", 1)
    assert "row locked" in (row.error or "")

    run = await h.run()
    assert run.status is RunStatus.SUCCESS
    assert h.receiver.ops() == [("removed", "5")]
    assert h.receiver.rows[0]["data"] == {"id": 5, "v": 1}
    assert await h.store.pending_counts() == {}
    assert await h.store.held("7", ["5"]) == {}


async def test_a_key_maybe_held_is_sent_as_added_once_its_sync_only_inserts(
    harness: Harness,
) -> None:
    """Key 5's removal is refused, so the destination may hold it or not. The sync then
    inserts only: its run drops the removal. The key's next version is sent as added, not
    dropped as a change the mode does not send."""
    h = harness
    await h.setup(mode="mirror")
    h.receiver.replies = [(200, {"rejected": [{"key": "5", "error": "row locked"}]}, {})]
    writes = h.writes("upsert", [{"id": 5, "v": 1}], ("delete", [{"id": 5}]))
    _, ticket = await h.streams.take(writes, set(), set())
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)

    configuration = {**h.sync.configuration, "mode": "insert"}
    h.sync = Sync.model_validate(
        {**h.sync.model_dump(), "configuration": configuration, "updated_at": datetime.now(UTC)}
    )
    await h.store.upsert(h.sync)
    h.streams.set_syncs([h.sync])
    run = await h.run()
    assert run.status is RunStatus.SUCCESS
    assert h.receiver.rows == []
    assert await h.store.pending_counts() == {}

    # Streamed, or stored while the key still counts as pending here: a run sends it then.
    _, ticket = await h.take("upsert", [{"id": 5, "v": 2}])
    if ticket is not None:
        await asyncio.wait_for(ticket.done, 10)
    await h.run()
    assert h.receiver.ops() == [("added", "5")]
    assert h.latest() == {"5": 2}
    assert await h.store.pending_counts() == {}
    ((held, pending),) = (await h.store.held("7", ["5"])).values()
    assert held not in (None, MAYBE_HELD) and not pending


async def test_a_removal_in_flight_at_a_flush_is_sent_by_the_next_run(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    await h.setup(mode="mirror")
    h.receiver.delay = 30.0  # the endpoint hangs
    writes = h.writes("upsert", [{"id": 5, "v": 1}], ("delete", [{"id": 5}]))
    _, ticket = await h.streams.take(writes, set(), set())
    assert ticket is not None
    await wait_for(lambda: len(h.receiver.requests) >= 1, what="the removal to be sent")
    await h.streams.flush(0.2)
    await asyncio.wait_for(ticket.done, 5)
    assert await h.store.pending_counts() == {"7": 1}
    assert await h.store.failed_counts() == {}  # stopped, not refused
    await h.streams.close()
    h.receiver.delay = 0.0
    await h.run()
    assert h.receiver.ops()[-1] == ("removed", "5")
    assert await h.store.pending_counts() == {}


async def synced_then_restarted(make: HarnessFactory, n: int) -> tuple[Harness, Harness]:
    """A replica streams rows 0..n-1 to the receiver; a second one, over the same SQLite store
    and before it has taken anything, is what the first would be after a restart."""
    first = await make()
    await first.setup()
    _, ticket = await first.take("upsert", rows(n))
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    second = await make()
    second.sync = first.sync
    return first, second


def keys_asked(store: Store) -> list[str]:
    """The keys `store.held` is asked about from now on."""
    asked: list[str] = []
    held = store.held

    async def counted(sync_id: str, keys: Any) -> Any:
        asked.extend(keys)
        return await held(sync_id, keys)

    store.held = counted  # type: ignore[method-assign]
    return asked


async def test_a_restarted_replica_drops_unchanged_rows_without_a_read_of_their_keys(
    sqlite_harnesses: HarnessFactory,
) -> None:
    """On a store it alone writes, a replica warms its cache from the store: rows that come
    again unchanged are dropped with no read of their keys, a changed one is sent, and a key
    the store does not know is looked up."""
    _, second = await synced_then_restarted(sqlite_harnesses, 100)
    asked = keys_asked(second.store)
    second.streams.set_syncs([second.sync])
    assert await second.streams.warmed(10)
    assert not second.streams.warming
    assert len(second.streams.cache.get("7")) == 100

    accepted = len(second.receiver.rows)
    again = rows(100)
    again[5] = {"id": 5, "v": 1}
    stored, ticket = await second.take("upsert", [*again, {"id": 100, "v": 0}])
    assert stored == 0 and ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert asked == ["100"]
    assert {r["key"]: r["data"]["v"] for r in second.receiver.rows[accepted:]} == {"5": 1, "100": 0}
    assert second.metrics.registry.get_sample_value("sync_rows_unchanged_total") == 99


async def test_waiting_for_the_warm_up_is_bounded_and_ends_when_the_service_stops(
    sqlite_harnesses: HarnessFactory,
) -> None:
    """The service waits for the warm-up before it joins its group, but no longer than it is
    told, nor once it is stopping; the warm-up then goes on by itself."""
    _, second = await synced_then_restarted(sqlite_harnesses, 10)
    go = asyncio.Event()
    settled_page = second.store.settled_page

    async def slow(*args: Any) -> Any:
        await go.wait()
        return await settled_page(*args)

    second.store.settled_page = slow  # type: ignore[method-assign]
    second.streams.set_syncs([second.sync])
    assert not await second.streams.warmed(0.05)
    stopping = asyncio.Event()
    waiting = asyncio.create_task(second.streams.warmed(30, stopping))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stopping.set()
    assert not await asyncio.wait_for(waiting, 5)
    assert second.streams.warming
    go.set()
    assert await second.streams.warmed(10)
    assert len(second.streams.cache.get("7")) == 10


async def test_a_warm_up_page_read_before_the_cache_dropped_entries_is_not_used(
    sqlite_harnesses: HarnessFactory,
) -> None:
    """The sync's mapping changes while a page of the warm-up is on its way: the hashes it
    read are of the old projection, so the cache takes none of them and asks the store."""
    _, second = await synced_then_restarted(sqlite_harnesses, 10)
    read, go = asyncio.Event(), asyncio.Event()
    settled_page = second.store.settled_page

    async def gated(*args: Any) -> Any:
        page = await settled_page(*args)
        read.set()
        await go.wait()
        return page

    second.store.settled_page = gated  # type: ignore[method-assign]
    second.streams.set_syncs([second.sync])
    await asyncio.wait_for(read.wait(), 10)
    changed = second.sync.model_copy(update={"updated_at": datetime.now(UTC)})
    second.streams.set_syncs([changed])
    go.set()
    await wait_for(lambda: not second.streams.warming, what="the warm-up to end")
    assert second.streams.cache.get("7") == {}

    asked = keys_asked(second.store)
    _, ticket = await second.take("upsert", rows(10))
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert sorted(asked, key=int) == [str(i) for i in range(10)]


async def test_a_replica_on_a_shared_store_does_not_warm_its_cache(
    postgres_url: str, receiver: Receiver
) -> None:
    """Other replicas write a PostgreSQL store: what a page says could be undone by them
    without this replica's cache hearing of it, so the cache fills from reads of the keys
    taken only."""
    store = make_store(postgres_url)
    await store.open()
    first, second = Harness(store, receiver), Harness(store, receiver)
    try:
        await first.setup()
        _, ticket = await first.take("upsert", rows(10))
        assert ticket is not None
        await asyncio.wait_for(ticket.done, 10)
        second.sync = first.sync
        second.streams.set_syncs([second.sync])
        assert not second.streams.warming
        asked = keys_asked(store)
        _, ticket = await second.take("upsert", rows(10))
        assert ticket is not None and ticket.done.done()
        assert sorted(asked, key=int) == [str(i) for i in range(10)]
    finally:
        await first.close()
        await second.close()
        await store.close()


async def test_a_row_removed_by_another_replica_is_not_dropped_as_unchanged(
    postgres_url: str, receiver: Receiver
) -> None:
    """Two replicas on one PostgreSQL store: B streams key 1 and caches it as held; a snapshot
    closed on A removes it. The same version of key 1 on B afterwards is sent again, not
    dropped against what B's cache remembered."""
    stores = [make_store(postgres_url), make_store(postgres_url)]
    for store in stores:
        await store.open()
    b, a = (Harness(store, receiver) for store in stores)
    try:
        await b.setup(mode="mirror")
        a.sync = b.sync
        a.streams.set_syncs([a.sync])
        _, ticket = await b.take("upsert", [{"id": 1, "v": 0}, {"id": 2, "v": 0}])
        assert ticket is not None
        await asyncio.wait_for(ticket.done, 10)
        assert b.latest() == {"1": 0, "2": 0}

        closing = change(
            {"modelId": "1", "op": "snapshot", "snapshotId": "s1", "last": True,
             "rows": [{"id": 2, "v": 0}]}
        )  # fmt: skip
        (part,) = a.ingest.prepare([closing], build_routes([a.sync]))
        await a.store.write_pending(part.writes, part.snapshot)
        await a.run()
        assert receiver.ops()[-1] == ("removed", "1")
        assert await a.store.held("7", ["1"]) == {}

        requests = len(receiver.requests)
        _, ticket = await b.take("upsert", [{"id": 1, "v": 0}, {"id": 2, "v": 0}])
        assert ticket is not None
        await asyncio.wait_for(ticket.done, 10)
        assert receiver.ops()[-1] == ("added", "1")
        assert len(receiver.requests) == requests + 1  # key 2 is still held: not sent
        held = await b.store.held("7", ["1", "2"])
        assert {key: pending for key, (_, pending) in held.items()} == {"1": False, "2": False}
    finally:
        await a.close()
        await b.close()
        for store in stores:
            await store.close()


async def test_a_key_whose_flight_lands_while_take_reads_the_store_is_decided_by_that_flight(
    sqlite_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key 1 is held at v0 and v1 is in flight. A fetch brings v0 of key 1 again and a new key,
    so `take` reads the store for the new key; v1 lands meanwhile. The v0 is then compared
    with v1, what the destination now holds, and sent, not dropped against the v0 that the
    cache held when the fetch was first looked up."""
    h = sqlite_harness
    await h.setup()
    _, ticket = await h.take("upsert", [{"id": 1, "v": 0}])
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)

    h.receiver.delay = 0.3
    _, flight = await h.take("upsert", [{"id": 1, "v": 1}])
    assert flight is not None
    await wait_for(lambda: "1" in h.streams._streams["7"].flying, what="v1 in flight")
    read = h.store.held
    asked: list[list[str]] = []

    async def held_once_v1_landed(sync_id: str, keys: Any) -> Any:
        asked.append(list(keys))
        await asyncio.wait_for(flight.done, 10)  # type: ignore[union-attr]
        return await read(sync_id, keys)

    monkeypatch.setattr(h.store, "held", held_once_v1_landed)
    _, ticket = await h.take("upsert", [{"id": 1, "v": 0}, {"id": 2, "v": 0}])
    assert ticket is not None
    await asyncio.wait_for(ticket.done, 10)
    assert asked == [["2"]]
    assert h.latest() == {"1": 0, "2": 0}
    assert [op for op, key in h.receiver.ops() if key == "1"] == ["added", "changed", "changed"]
