"""Sending on a fake destination: batches sent while the store records others wait for their
record beyond the destination's concurrency, and are recorded together."""

from __future__ import annotations

import asyncio

from service.core.metrics import Metrics
from service.core.rows import RowChange
from service.runner.runner import RECORD_AHEAD, Sending, Sent
from tests.contract.test_store import run, sync
from tests.unit.test_delivery import Clock, Scripted, delivery


def rows(name: str) -> list[RowChange]:
    return [RowChange("added", name, {"id": name}, seq=0)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_batches_sent_while_one_is_recorded_are_recorded_together() -> None:
    writer = Scripted()
    sending_to = delivery(writer, Clock())
    assert sending_to.limiter.limit == 1
    recording = asyncio.Event()
    groups: list[list[str]] = []

    async def record(sent: list[Sent]) -> None:
        groups.append([batch[0].key for batch, _ in sent])
        await recording.wait()

    sending = Sending(sync(), run(1, 0), sending_to, record=record, batch_rows=Metrics().batch_rows)
    # One batch in the destination's single slot and RECORD_AHEAD waiting for their record.
    for n in range(1 + RECORD_AHEAD):
        await asyncio.wait_for(sending.dispatch(rows(f"b{n}")), 1)
        await settle()
    assert len(writer.batches) == 1 + RECORD_AHEAD  # all sent: the destination answered each
    assert groups == [["b0"]]  # the first record holds the rest back
    more = asyncio.create_task(sending.dispatch(rows("late")))
    await settle()
    assert not more.done()  # no room until records are done
    recording.set()
    await asyncio.wait_for(more, 1)
    await asyncio.wait_for(sending.finish(), 1)
    assert groups[1] == [f"b{n}" for n in range(1, 1 + RECORD_AHEAD)]  # one record, together
    assert [key for group in groups for key in group] == [
        *(f"b{n}" for n in range(1 + RECORD_AHEAD)),
        "late",
    ]
