"""Pipeline.consume: batches are stored and committed in order, the next one prepared meanwhile;
a batch that is not stored is never passed by a later commit."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from service.app import Pipeline
from service.core.metrics import Metrics
from service.ingest import IngestResult, PreparedPart
from service.source.kafka import EventBatch

TP = TopicPartition("model-changes", 0)


class Source:
    """Hands out batches 1..n (offsets n+1), then empty fetches."""

    def __init__(self, n: int) -> None:
        self.batches = [EventBatch(offsets={TP: i + 1}, records=1) for i in range(n)]
        self.commits: list[int] = []

    async def fetch(self, timeout_ms: int = 500) -> EventBatch:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(0.01)
        return EventBatch()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])


class Store:
    async def catalog_version(self) -> int:
        return 0


class Ingest:
    """`store` fails for the batches in `failing` until the pipeline stops."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing
        self.prepared = 0
        self.log: list[tuple[str, int]] = []

    def prepare(self, events: Any, routes: Any) -> list[PreparedPart]:
        self.prepared += 1  # the batch's number travels in `rows`
        return [PreparedPart([], None, IngestResult(rows=self.prepared))]  # type: ignore[arg-type]

    async def store(self, parts: list[PreparedPart]) -> IngestResult:
        n = parts[0].found.rows
        self.log.append(("store", n))
        await asyncio.sleep(0.01)
        if n in self.failing:
            raise OSError("disk full")
        return IngestResult(sync_ids={"1"})


class Scheduler:
    def __init__(self) -> None:
        self.notified = 0

    def notify_pending(self, sync_ids: Any) -> None:
        self.notified += 1


def pipeline(source: Source, ingest: Ingest) -> Pipeline:
    return Pipeline(
        settings=None,  # type: ignore[arg-type]
        store=Store(),  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        ingest=ingest,  # type: ignore[arg-type]
        scheduler=Scheduler(),  # type: ignore[arg-type]
        reporter=None,  # type: ignore[arg-type]
        metrics=Metrics(),
        routes={},
        catalog_version=0,
    )


async def test_batches_are_committed_in_order_once_stored() -> None:
    source = Source(5)
    p = pipeline(source, Ingest(failing=set()))
    consuming = asyncio.create_task(p.consume())
    while len(source.commits) < 5:
        await asyncio.sleep(0.01)
    p.stopping = True
    await asyncio.wait_for(consuming, 5)
    assert source.commits == [1, 2, 3, 4, 5]
    assert p.scheduler.notified == 5  # type: ignore[attr-defined]


async def test_a_batch_not_stored_when_stopping_holds_back_every_later_commit() -> None:
    source = Source(4)
    ingest = Ingest(failing={2})
    p = pipeline(source, ingest)
    consuming = asyncio.create_task(p.consume())
    while ("store", 2) not in ingest.log:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # batch 3 is prepared meanwhile, and waits
    assert ingest.prepared == 3
    p.stopping = True
    await asyncio.wait_for(consuming, 5)
    assert source.commits == [1]
    assert ("store", 3) not in ingest.log
