"""ConsumeLoop: batches are stored and committed in order, the next one prepared meanwhile; a
batch not stored is never passed by a later commit; failures are retried a bounded number of
times, then set aside to the DLQ; the DLQ or the store failing holds the consumer back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from service.core.metrics import Metrics
from service.core.rows import PendingWrite, RouteIndex, SnapshotProgress, SyncRoute
from service.ingest import Ingest
from service.pipeline.commit import OffsetLedger, OffsetRegression
from service.pipeline.consume import Backoff, ConsumeLoop
from service.source.dlq import DeadLetter
from service.source.kafka import EventBatch
from tests.support import change

TP = TopicPartition("model-changes", 0)
ROUTES: RouteIndex = {"1": (SyncRoute("10", "id", ("id", "v")),)}
FAST = Backoff(attempts=3, base=0.001, most=0.002)


def batch(n: int, *rows: dict[str, Any]) -> EventBatch:
    """Batch n: one event per row (default one row with key n), committing offset n."""
    rows = rows or ({"id": n, "v": "x"},)
    events = [change({"modelId": "1", "op": "upsert", "rows": [r]}) for r in rows]
    messages = [
        SimpleNamespace(topic=TP.topic, partition=0, offset=n - 1, key=b"1", value=b"{}")
        for _ in rows
    ]
    return EventBatch(
        events=events,
        offsets={TP: n},
        records=len(events),
        spans=[(TP.topic, len(events))],
        messages=messages,
    )


class Source:
    """Hands out the given batches, then empty fetches."""

    def __init__(self, batches: list[EventBatch]) -> None:
        self.batches = batches
        self.commits: list[int] = []
        self.generation = 0
        self.revoke: Callable[[], Awaitable[None]] | None = None
        self.fetched = asyncio.Event()

    def on_revoke(self, callback: Callable[[], Awaitable[None]]) -> None:
        self.revoke = callback

    async def fetch(self, timeout_ms: int = 500) -> EventBatch:
        if self.batches:
            b = self.batches.pop(0)
            b.generation = self.generation
            return b
        self.fetched.set()
        await asyncio.sleep(0.001)
        return EventBatch()

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        if offsets:
            self.commits.append(offsets[TP])
        return True

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {TP: 0}

    def partition_count(self, topic: str) -> int:
        return 1

    async def committed(self, tp: TopicPartition) -> int | None:
        return None


class Store:
    """write_pending fails while `down`, and for any row whose key is in `poison`."""

    def __init__(self) -> None:
        self.down = False
        self.poison: set[str] = set()
        self.rows: dict[str, bytes | None] = {}
        self.gate: asyncio.Event | None = None
        self.writes = 0
        #: The write (counted from 1) from which the store is down.
        self.down_from: int | None = None
        self.snapshot_keys: list[str] = []
        #: Each close: the snapshots closed and the snapshot's keys known then.
        self.closed: list[tuple[list[tuple[str, str]], list[str]]] = []

    async def write_pending(self, writes: Sequence[PendingWrite], snap: SnapshotProgress) -> int:
        if self.gate is not None:
            await self.gate.wait()
        self.writes += 1
        if self.down_from is not None and self.writes >= self.down_from:
            self.down = True
        if self.down:
            raise OSError("connection refused")
        if any(w.key in self.poison for w in writes):
            raise ValueError("the store refuses this row")
        self.rows.update((w.key, w.data) for w in writes)
        self.snapshot_keys.extend(k for _, _, k in snap.keys)
        if snap.closed:
            self.closed.append((list(snap.closed), sorted(self.snapshot_keys)))
        return len(writes)

    async def ping(self) -> bool:
        return not self.down


class Catalog:
    async def refresh(self) -> None:
        pass

    def routes_for(self, b: EventBatch) -> list[RouteIndex]:
        return [ROUTES] * len(b.events)

    def is_model(self, model_id: str) -> bool:
        return model_id in ROUTES


class DLQ:
    def __init__(self) -> None:
        self.refusing = False
        self.failing = False
        self.letters: list[DeadLetter] = []
        self.attempts = 0

    async def send(
        self, letters: Sequence[DeadLetter], stopping: Callable[[], bool] = bool
    ) -> bool:
        while True:
            self.attempts += 1
            self.failing = self.refusing
            if not self.refusing:
                self.letters.extend(letters)
                return True
            if stopping():
                return False
            await asyncio.sleep(0.001)


class Scheduler:
    def __init__(self) -> None:
        self.notified: list[set[str]] = []

    def notify_pending(self, sync_ids: Any) -> None:
        self.notified.append(set(sync_ids))


def loop(source: Source, store: Store, dlq: DLQ | None = None) -> ConsumeLoop:
    return ConsumeLoop(
        source,  # type: ignore[arg-type]
        Ingest(store, Metrics()),  # type: ignore[arg-type]
        Catalog(),
        Scheduler(),
        dlq or DLQ(),
        store.ping,
        backoff=FAST,
        drain_seconds=5,
    )


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def stop(c: ConsumeLoop, task: asyncio.Task[None]) -> None:
    c.stopping = True
    await asyncio.wait_for(task, 5)


async def test_batches_are_committed_in_order_once_stored() -> None:
    source, store = Source([batch(i) for i in range(1, 6)]), Store()
    c = loop(source, store)
    task = asyncio.create_task(c.run())
    await until(lambda: len(source.commits) == 5)
    await stop(c, task)
    assert source.commits == [1, 2, 3, 4, 5]
    assert set(store.rows) == {"1", "2", "3", "4", "5"}
    assert c.scheduler.notified == [{"10"}] * 5  # type: ignore[attr-defined]


async def test_a_batch_not_stored_when_stopping_holds_back_every_later_commit() -> None:
    source, store = Source([batch(1), batch(2), batch(3)]), Store()
    store.down_from = 2  # batch 2 retries without end: the store does not answer
    c = loop(source, store)
    task = asyncio.create_task(c.run())
    await until(lambda: c.health.stuck and store.writes > 10)
    await stop(c, task)
    assert source.commits == [1]
    assert "3" not in store.rows


async def test_a_store_outage_holds_the_consumer_back_then_it_resumes_by_itself() -> None:
    source, store = Source([batch(1), batch(2)]), Store()
    store.down = True
    c = loop(source, store)
    task = asyncio.create_task(c.run())
    await until(lambda: c.health.stuck)
    assert source.commits == []  # far more failures than `attempts`: not the batch's fault
    store.down = False
    await until(lambda: source.commits == [1, 2])
    assert not c.health.stuck
    await stop(c, task)
    assert set(store.rows) == {"1", "2"}


async def test_a_batch_the_store_keeps_refusing_goes_event_by_event_failures_to_dlq() -> None:
    rows = ({"id": 1, "v": "a"}, {"id": 66, "v": "bad"}, {"id": 3, "v": "c"})
    source, store, dlq = Source([batch(1, *rows), batch(2)]), Store(), DLQ()
    store.poison = {"66"}
    c = loop(source, store, dlq)
    task = asyncio.create_task(c.run())
    await until(lambda: source.commits == [1, 2])
    await stop(c, task)
    assert set(store.rows) == {"1", "3", "2"}
    [letter] = dlq.letters
    assert (letter.error_class, letter.offset) == ("ValueError", 0)
    assert "refuses this row" in letter.error_message
    assert not c.health.stuck


async def test_a_refusing_dlq_holds_back_the_commit_until_it_accepts() -> None:
    b = batch(1)
    b.dead.append(DeadLetter("model-changes", 0, 7, None, b"nope", "InvalidEvent", "json"))
    source, store, dlq = Source([b, batch(2)]), Store(), DLQ()
    dlq.refusing = True
    c = loop(source, store, dlq)
    task = asyncio.create_task(c.run())
    await until(lambda: dlq.attempts > 5)
    assert source.commits == []
    assert c.stuck
    dlq.refusing = False
    await until(lambda: source.commits == [1, 2])
    await stop(c, task)
    assert [d.offset for d in dlq.letters] == [7]
    assert not c.stuck


async def test_an_event_that_fails_to_prepare_goes_to_the_dlq_alone() -> None:
    source, store, dlq = (
        Source([batch(1, {"id": 1, "v": "a"}, {"id": 2, "v": "b"})]),
        Store(),
        DLQ(),
    )
    c = loop(source, store, dlq)
    real = c.ingest.prepare

    def prepare(events: Any, routes: Any, **kw: Any) -> Any:
        if any(r.get("id") == 2 for e in events for r in e.rows):
            raise RuntimeError("a bug met by this event only")
        return real(events, routes, **kw)

    c.ingest.prepare = prepare  # type: ignore[method-assign]
    task = asyncio.create_task(c.run())
    await until(lambda: source.commits == [1])
    await stop(c, task)
    assert set(store.rows) == {"1"}
    assert [d.error_class for d in dlq.letters] == ["RuntimeError"]


async def test_a_revocation_waits_for_the_batch_in_flight_and_its_commit() -> None:
    source, store = Source([batch(1)]), Store()
    store.gate = asyncio.Event()
    c = loop(source, store)
    task = asyncio.create_task(c.run())
    await until(lambda: c._storing is not None)
    assert source.revoke is not None
    revoking = asyncio.create_task(source.revoke())
    await asyncio.sleep(0.01)
    assert not revoking.done()  # waits for the store
    store.gate.set()
    await asyncio.wait_for(revoking, 5)
    assert source.commits == [1]  # committed before the partitions move
    await stop(c, task)


async def test_a_batch_fetched_before_a_revocation_is_dropped_uncommitted() -> None:
    source, store = Source([batch(1), batch(2)]), Store()
    c = loop(source, store)
    original = source.fetch

    async def fetch(timeout_ms: int = 500) -> EventBatch:
        b = await original(timeout_ms)
        if b.offsets.get(TP) == 2:
            source.generation += 1  # the group rebalanced after this fetch
        return b

    source.fetch = fetch  # type: ignore[method-assign]
    task = asyncio.create_task(c.run())
    await until(source.fetched.is_set)
    await stop(c, task)
    assert source.commits == [1]
    assert "2" not in store.rows


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1000)), max_size=50))
def test_committed_offsets_only_grow(steps: list[tuple[int, int]]) -> None:
    ledger = OffsetLedger()
    committed: dict[int, list[int]] = {}
    for partition, offset in steps:
        tp = TopicPartition("t", partition)
        try:
            sent = ledger.forward({tp: offset})
        except OffsetRegression:
            assert offset < ledger.committed[tp]
            continue
        ledger.record(sent)
        committed.setdefault(partition, []).extend(sent.values())
    for offsets in committed.values():
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_a_lower_offset_is_refused() -> None:
    ledger = OffsetLedger()
    ledger.record({TP: 10})
    with pytest.raises(OffsetRegression):
        ledger.forward({TP: 9})


def records(*items: tuple[int, int, dict[str, Any]]) -> EventBatch:
    """A batch of (partition, offset, event) records of the topic of TP."""
    out = EventBatch()
    for partition, offset, event in items:
        out.events.append(change(event))
        out.messages.append(
            SimpleNamespace(
                topic=TP.topic, partition=partition, offset=offset, key=b"k", value=b"{}"
            )
        )
        tp = TopicPartition(TP.topic, partition)
        out.offsets[tp] = offset + 1
        out.spans.append((TP.topic, len(out.events)))
    out.records = len(out.events)
    return out


class TwoPartitions(Source):
    """Partitions 0 and 1 of one topic, each with two records."""

    def __init__(self, batches: list[EventBatch]) -> None:
        super().__init__(batches)
        self.all_commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        if offsets:
            self.all_commits.append(dict(offsets))
        return True

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 2}

    def partition_count(self, topic: str) -> int:
        return 2


def snap(row: dict[str, Any], last: bool = False) -> dict[str, Any]:
    return {"modelId": "1", "op": "snapshot", "snapshotId": "s", "rows": [row], "last": last}


async def test_a_snapshot_closes_only_once_every_partition_delivered_its_part() -> None:
    p0, p1 = TopicPartition(TP.topic, 0), TopicPartition(TP.topic, 1)
    first = records((0, 0, snap({"id": "a"})), (0, 1, snap({"id": "b"}, last=True)))
    # Partition 1 comes later: its part of the snapshot and a row streamed after it.
    second = records(
        (1, 0, snap({"id": "c"})),
        (1, 1, {"modelId": "1", "op": "upsert", "rows": [{"id": "d"}]}),
    )
    source, store = TwoPartitions([first]), Store()
    c = loop(source, store)
    task = asyncio.create_task(c.run())
    await until(lambda: len(source.all_commits) == 1)
    assert store.closed == []
    # The closing record's partition is committed up to the closing record, not past it.
    assert source.all_commits == [{p0: 1}]
    source.batches.append(second)
    await until(lambda: store.closed != [])
    # The second batch's offsets and the closing record's may go in one commit.
    await until(
        lambda: {k: v for c in source.all_commits[1:] for k, v in c.items()} == {p1: 2, p0: 2}
    )
    await stop(c, task)
    assert store.closed == [([("10", "s")], ["a", "b", "c", "d"])]
    # p0 passes the closing record only once the snapshot closed, in the last commit.
    assert [c[p0] for c in source.all_commits if p0 in c] == [1, 2]
