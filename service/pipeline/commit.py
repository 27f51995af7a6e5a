"""The commit protocol: what must be durable, in which order, before an offset is committed."""

from __future__ import annotations

import logging
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


async def store_then_commit(
    batch: EventBatch,
    prepared: Prepared,
    *,
    send_dead: Callable[[Sequence[DeadLetter]], Awaitable[bool]],
    store: Callable[[EventBatch, Prepared], Awaitable[Stored | None]],
    commit: Callable[[dict[TopicPartition, int]], Awaitable[bool]],
    ledger: OffsetLedger,
) -> IngestResult | None:
    """Makes a batch durable, then commits its offsets; None when the service stopped first
    (then nothing is committed and the batch is read again).

    1. The DLQ acknowledged every record that could not be decoded or prepared.
    2. The store committed every prepared transaction (retried; events it keeps refusing
       one by one are set aside).
    3. The DLQ acknowledged the events set aside in 2.
    4. Only then the offsets, and only forward (OffsetLedger).
    """
    if not await send_dead([*batch.dead, *prepared.dead]):
        return None
    stored = await store(batch, prepared)
    if stored is None:
        return None
    if not await send_dead(stored.dead):
        return None
    offsets = ledger.forward(batch.offsets)
    if await commit(offsets):
        ledger.record(offsets)
    return stored.result
