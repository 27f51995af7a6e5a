"""DeadLetters: a DLQ that refuses holds the caller back with backoff; nothing is skipped."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import KafkaTimeoutError

from service.source.dlq import DeadLetter, DeadLetters

LETTER = DeadLetter("model-changes", 3, 41, b"k", b"v", "InvalidEvent", "not valid JSON")


class Producer:
    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.sent: list[tuple[str, Any, Any, Any]] = []

    async def send(
        self, topic: str, value: Any = None, key: Any = None, headers: Any = None
    ) -> Any:
        future = asyncio.get_running_loop().create_future()
        if self.refusals:
            self.refusals -= 1
            future.set_exception(KafkaTimeoutError("topic sync-dlq not present in metadata"))
        else:
            self.sent.append((topic, key, value, headers))
            future.set_result(None)
        return future


async def test_a_refusing_dlq_is_retried_until_it_holds_the_letter() -> None:
    producer = Producer(refusals=3)
    dlq = DeadLetters(producer, "sync-dlq", base_delay=0.001, max_delay=0.002)  # type: ignore[arg-type]
    assert await dlq.send([LETTER])
    [(topic, key, value, headers)] = producer.sent
    assert (topic, key, value) == ("sync-dlq", b"k", b"v")
    assert dict(headers) == {
        "error.class": b"InvalidEvent",
        "error.message": b"not valid JSON",
        "original.topic": b"model-changes",
        "original.partition": b"3",
        "original.offset": b"41",
    }
    assert not dlq.failing


async def test_stopping_while_the_dlq_refuses_gives_up_unsent() -> None:
    producer = Producer(refusals=1000)
    dlq = DeadLetters(producer, "sync-dlq", base_delay=0.001, max_delay=0.002)  # type: ignore[arg-type]
    calls = 0

    def stopping() -> bool:
        nonlocal calls
        calls += 1
        return calls > 3

    assert not await dlq.send([LETTER], stopping)
    assert dlq.failing and producer.sent == []
