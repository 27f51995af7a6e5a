"""The dead-letter queue: records that cannot be processed, with why, in Kafka Connect's format."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

MAX_ERROR_MESSAGE = 500
#: The largest record the DLQ takes whole: the service's producer allows requests this large
#: and the DLQ topic the service creates takes messages this large. Kafka's default (1 MiB)
#: would leave an invalid record of a topic that allows more with nowhere to go, and as the
#: consumer waits for the DLQ (below), consumption would stop for good: the producer's own
#: limit is not something an operator can raise.
MAX_LETTER_BYTES = 64 << 20


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """One record as it arrived, and the error that keeps it out of the pipeline."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error_class: str
    error_message: str

    @classmethod
    def of(cls, message: Any, error: BaseException) -> DeadLetter:
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            type(error).__name__,
            str(error)[:MAX_ERROR_MESSAGE],
        )

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("error.class", self.error_class.encode()),
            ("error.message", self.error_message.encode("utf-8", "replace")),
            ("original.topic", self.topic.encode()),
            ("original.partition", str(self.partition).encode()),
            ("original.offset", str(self.offset).encode()),
        ]


class DeadLetters:
    """Sends dead letters and waits for the broker's acknowledgement. A DLQ that refuses (broker
    down, topic missing) holds the consumer back with backoff: the records' offsets are
    committed only once the DLQ holds them, so nothing is skipped."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._base_delay = base_delay
        self._max_delay = max_delay
        #: True while the last attempt failed; the readiness check reads it.
        self.failing = False

    async def send(
        self, letters: Sequence[DeadLetter], stopping: Callable[[], bool] = lambda: False
    ) -> bool:
        """True once the DLQ acknowledged every letter; False if `stopping()` turned true
        while the DLQ refused (the caller then commits nothing)."""
        if not letters:
            return True
        delay = self._base_delay
        while True:
            try:
                futures = [
                    await self._producer.send(
                        self.topic, value=d.value, key=d.key, headers=d.headers()
                    )
                    for d in letters
                ]
                await asyncio.gather(*futures)
            except KafkaError as exc:
                self.failing = True
                log.error(
                    "the DLQ %s refused %d records (%s); consumption pauses, retrying in %.1fs",
                    self.topic,
                    len(letters),
                    exc,
                    delay,
                )
                if stopping():
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_delay)
                continue
            self.failing = False
            log.warning("sent %d records to the DLQ %s", len(letters), self.topic)
            return True
