"""Sending on a fake destination: batches sent while the store records others wait for their
record beyond the destination's concurrency, and are recorded together."""

from __future__ import annotations

import asyncio

import pytest

from service.core.metrics import Metrics
from service.core.rows import RowChange
from service.runner.runner import RECORD_AHEAD, RECORD_AHEAD_ROWS, Sending, Sent
from tests.contract.test_store import run, sync
from tests.unit.test_delivery import Clock, Scripted, delivery


def rows(name: str, n: int = 1) -> list[RowChange]:
    return [RowChange("added", f"{name}-{i}", {"id": name}, seq=0) for i in range(n)]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("size", "ahead"),
    [(RECORD_AHEAD_ROWS, RECORD_AHEAD), (RECORD_AHEAD_ROWS // 8, 8), (1, RECORD_AHEAD_ROWS)],
    ids=["big batches: RECORD_AHEAD", "rows bound", "1-row batches: rows bound"],
)
async def test_batches_sent_while_one_is_recorded_are_recorded_together(
    size: int, ahead: int
) -> None:
    writer = Scripted()
    sending_to = delivery(writer, Clock())
    assert sending_to.limiter.limit == 1
    recording = asyncio.Event()
    groups: list[list[str]] = []

    async def record(sent: list[Sent]) -> None:
        groups.append([batch[0].key.split("-")[0] for batch, _ in sent])
        await recording.wait()

    sending = Sending(sync(), run(1, 0), sending_to, record=record, batch_rows=Metrics().batch_rows)
    # One batch in the destination's single slot and `ahead` waiting for their record: at
    # least RECORD_AHEAD batches, else as many as RECORD_AHEAD_ROWS rows make.
    for n in range(1 + ahead):
        await asyncio.wait_for(sending.dispatch(rows(f"b{n}", size)), 1)
        if n < 2 or n == ahead:
            await settle()
    await settle()
    assert len(writer.batches) == 1 + ahead  # all sent: the destination answered each
    assert groups == [["b0"]]  # the first record holds the rest back
    more = asyncio.create_task(sending.dispatch(rows("late", size)))
    await settle()
    assert not more.done()  # no room until records are done
    recording.set()
    await asyncio.wait_for(more, 5)
    await asyncio.wait_for(sending.finish(), 5)
    assert groups[1] == [f"b{n}" for n in range(1, 1 + ahead)]  # one record, together
    assert [key for group in groups for key in group] == [
        *(f"b{n}" for n in range(1 + ahead)),
        "late",
    ]
