"""The commit protocol: what must be durable, in which order, before an offset is committed."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from service.core.rows import RouteIndex
from service.ingest import IngestResult, PreparedPart
from service.source.dlq import DeadLetter
from service.source.kafka import EventBatch

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Prepared:
    """A batch made ready to store: its store transactions and the events it could not use."""

    parts: list[PreparedPart]
    #: Events whose preparation failed; they go to the DLQ.
    dead: list[DeadLetter] = field(default_factory=list)
    #: The route index of each event (the models of the workspace owning its topic).
    event_routes: Sequence[RouteIndex] = ()


@dataclass(slots=True)
class Stored:
    result: IngestResult
    #: Events the store refused one by one (after the batch failed again and again).
    dead: list[DeadLetter] = field(default_factory=list)
    #: Done once the batch's rows streamed from memory are recorded (or spilled to the store).
    streamed: list[asyncio.Future[None]] = field(default_factory=list)


class OffsetRegression(AssertionError):
    """An offset lower than one already committed for its partition: a bug, never sent."""


class OffsetLedger:
    """The offsets committed so far. Committed offsets only grow: a commit never moves a
    partition back, which would make the group read (and count) events twice."""

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}

    def forward(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The offsets to commit: each must be at least the last one committed."""
        for tp, offset in offsets.items():
            last = self.committed.get(tp)
            if last is not None and offset < last:
                raise OffsetRegression(f"{tp.topic}[{tp.partition}]: {offset} after {last}")
        return {tp: o for tp, o in offsets.items() if o != self.committed.get(tp)}

    def record(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)


class Committer:
    """Commits offsets in the order batches were stored, each once its streamed rows are done
    too: a batch whose rows are still in memory holds back its commit and every later one.
    Offsets waiting together are committed at once."""

    def __init__(
        self, commit: Callable[[dict[TopicPartition, int]], Awaitable[bool]], ledger: OffsetLedger
    ) -> None:
        self._commit = commit
        self.ledger = ledger
        self._queue: deque[tuple[dict[TopicPartition, int], list[asyncio.Future[None]]]] = deque()
        self._task: asyncio.Task[None] | None = None
        #: Set when streamed rows could not be sent nor spilled (the service stopped): nothing
        #: after them is committed, they are read again.
        self.broken = False

    def add(
        self, offsets: dict[TopicPartition, int], waits: Sequence[asyncio.Future[None]] = ()
    ) -> None:
        if self.broken:
            return
        waiting = [w for w in waits if not w.done() or w.cancelled() or w.exception() is not None]
        if not waiting and self._queue:
            # Nothing of this batch is in memory: its offsets go with the batch before it, so a
            # long wait at the head (a stalled destination) holds one entry, not one a batch.
            self._queue[-1][0].update(offsets)
            return
        self._queue.append((dict(offsets), waiting))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="commit")

    async def _run(self) -> None:
        while self._queue:
            offsets, waits = self._queue[0]
            if waits:
                await asyncio.wait(waits)
                if any(w.cancelled() or w.exception() is not None for w in waits):
                    log.warning("rows of a batch were neither sent nor stored; not committing")
                    self.broken = True
                    self._queue.clear()
                    return
            self._queue.popleft()
            merged = dict(offsets)
            while self._queue and all(
                w.done() and not w.cancelled() and w.exception() is None for w in self._queue[0][1]
            ):
                merged.update(self._queue.popleft()[0])
            forward = self.ledger.forward(merged)
            if await self._commit(forward):
                self.ledger.record(forward)

    async def idle(self) -> None:
        """Until every offset queued so far is committed (or given up)."""
        while self._task is not None and not self._task.done():
            await asyncio.wait({self._task})

    def clear(self) -> None:
        """Forget what waits (a rebalance that could not wait: those events are read again)."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self.broken = False


async def store_then_commit(
    batch: EventBatch,
    prepared: Prepared,
    *,
    send_dead: Callable[[Sequence[DeadLetter]], Awaitable[bool]],
    store: Callable[[EventBatch, Prepared], Awaitable[Stored | None]],
    committer: Committer,
) -> IngestResult | None:
    """Makes a batch durable, then queues its offsets for commit; None when the service stopped
    first (then nothing is committed and the batch is read again).

    1. The DLQ acknowledged every record that could not be decoded or prepared.
    2. The store committed every prepared transaction (retried; events it keeps refusing
       one by one are set aside), and the rows streamed from memory were handed over.
    3. The DLQ acknowledged the events set aside in 2.
    4. Only then the offsets, once the streamed rows are recorded, in order and only forward
       (Committer, OffsetLedger).
    """
    if not await send_dead([*batch.dead, *prepared.dead]):
        return None
    stored = await store(batch, prepared)
    if stored is None:
        return None
    if not await send_dead(stored.dead):
        return None
    committer.add(batch.offsets, stored.streamed)
    return stored.result
