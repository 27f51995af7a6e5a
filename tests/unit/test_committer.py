"""Committer: offsets go out in the order batches were stored, each only once the rows it
streamed from memory are done, and never backwards."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from service.pipeline.commit import Committer, OffsetLedger, OffsetRegression

TP = TopicPartition("events", 0)


class Broker:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []
        self.refuse = False

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        if self.refuse:
            return False
        self.commits.append(dict(offsets))
        return True


async def test_a_batch_with_rows_in_memory_holds_back_its_commit_and_every_later_one() -> None:
    broker = Broker()
    committer = Committer(broker.commit, OffsetLedger())
    loop = asyncio.get_running_loop()
    first: asyncio.Future[None] = loop.create_future()
    committer.add({TP: 10}, [first])
    committer.add({TP: 20})  # nothing streamed, but behind the first
    await asyncio.sleep(0.01)
    assert broker.commits == []
    first.set_result(None)
    await committer.idle()
    # Both go at once: the later offset covers the earlier one.
    assert broker.commits == [{TP: 20}]
    assert committer.ledger.committed == {TP: 20}


async def test_rows_neither_sent_nor_stored_stop_every_commit_after_them() -> None:
    broker = Broker()
    committer = Committer(broker.commit, OffsetLedger())
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()
    committer.add({TP: 5})
    await committer.idle()
    committer.add({TP: 10}, [lost])
    committer.add({TP: 15})
    lost.set_exception(RuntimeError("the store did not answer"))
    await committer.idle()
    assert broker.commits == [{TP: 5}]
    assert committer.broken
    committer.add({TP: 20})  # read again after a restart, never committed past the loss
    await committer.idle()
    assert broker.commits == [{TP: 5}]


async def test_a_refused_commit_is_not_recorded_and_an_offset_never_goes_back() -> None:
    broker = Broker()
    committer = Committer(broker.commit, OffsetLedger())
    broker.refuse = True
    committer.add({TP: 10})
    await committer.idle()
    assert committer.ledger.committed == {}
    broker.refuse = False
    committer.add({TP: 12})
    await committer.idle()
    assert broker.commits == [{TP: 12}]
    with pytest.raises(OffsetRegression):
        committer.ledger.forward({TP: 11})


async def test_batches_behind_a_waiting_one_are_held_as_one_entry() -> None:
    broker = Broker()
    committer = Committer(broker.commit, OffsetLedger())
    head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    committer.add({TP: 1}, [head])
    for offset in range(2, 1002):
        committer.add({TP: offset})
    assert len(committer._queue) == 1
    head.set_result(None)
    await committer.idle()
    assert broker.commits == [{TP: 1001}]
