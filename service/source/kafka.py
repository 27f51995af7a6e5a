"""KafkaSource: fetches record batches from the consumer group and decodes them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from service.core.events import ChangeEvent, InvalidEvent
from service.core.metrics import Metrics
from service.source.decode import decode_event
from service.source.invalid_rate import InvalidRateMonitor

log = logging.getLogger(__name__)


@dataclass(slots=True)
class EventBatch:
    """Decoded events of one fetch and the offsets to commit once they are durable."""

    events: list[ChangeEvent] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0


class _Membership(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: object) -> None:
        pass

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.joined.set()


class KafkaSource:
    """Owns the consumer. `fetch` never raises for bad input: such records go to the DLQ (and
    are acknowledged by the broker) before the batch is returned, so committing the batch's
    offsets afterwards loses nothing."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        dlq: AIOKafkaProducer,
        dlq_topic: str,
        metrics: Metrics,
        max_records: int = 2000,
        invalid_rate: InvalidRateMonitor | None = None,
    ) -> None:
        self._consumer = consumer
        self._dlq = dlq
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._max_records = max_records
        self._membership = _Membership()
        self._invalid_rate = invalid_rate or InvalidRateMonitor(threshold=0.5, window=1000)
        self._topics: frozenset[str] = frozenset()

    @property
    def joined(self) -> bool:
        return self._membership.joined.is_set()

    def subscribe(self, topics: set[str]) -> None:
        """Consume exactly these topics; a change triggers a rebalance, not a restart."""
        wanted = frozenset(topics)
        if wanted != self._topics:
            log.info("consuming topics %s", ", ".join(sorted(wanted)))
            self._consumer.subscribe(topics=sorted(wanted), listener=self._membership)
            self._topics = wanted

    async def fetch(self, timeout_ms: int = 500) -> EventBatch:
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        batch = EventBatch()
        if not records:
            return batch
        pending_dlq = []
        invalid: dict[str, int] = {}
        for tp, messages in records.items():
            self._metrics.events_consumed.labels(tp.topic).inc(len(messages))
            batch.records += len(messages)
            dead_before = len(pending_dlq)
            for message in messages:
                try:
                    batch.events.append(decode_event(message.key, message.value))
                except InvalidEvent as exc:
                    invalid[exc.reason] = invalid.get(exc.reason, 0) + 1
                    pending_dlq.append(await self._send_to_dlq(message, exc))
            self._watch_invalid_rate(tp, len(messages), len(pending_dlq) - dead_before)
            batch.offsets[tp] = messages[-1].offset + 1
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - batch.offsets[tp])
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        if pending_dlq:
            await asyncio.gather(*pending_dlq)
            for reason, n in invalid.items():
                self._metrics.events_invalid.labels(reason).inc(n)
            log.warning("sent %d invalid events to %s", len(pending_dlq), self._dlq_topic)
        return batch

    def _watch_invalid_rate(self, tp: TopicPartition, events: int, invalid: int) -> None:
        monitor = self._invalid_rate
        if monitor.observe(tp.topic, tp.partition, events, invalid):
            log.error(
                "%s[%d]: %.0f%% of recent events are invalid and go to the DLQ %s; "
                "check the producer",
                tp.topic,
                tp.partition,
                100 * monitor.ratio(tp.topic, tp.partition),
                self._dlq_topic,
            )
        labels = (tp.topic, str(tp.partition))
        self._metrics.invalid_ratio.labels(*labels).set(monitor.ratio(tp.topic, tp.partition))
        self._metrics.dlq_alarm.labels(*labels).set(monitor.alarmed(tp.topic, tp.partition))

    async def _send_to_dlq(self, message: object, exc: InvalidEvent) -> asyncio.Future[object]:
        headers = [
            ("error.class", type(exc).__name__.encode()),
            ("error.message", str(exc).encode()),
            ("original.topic", message.topic.encode()),  # type: ignore[attr-defined]
            ("original.partition", str(message.partition).encode()),  # type: ignore[attr-defined]
            ("original.offset", str(message.offset).encode()),  # type: ignore[attr-defined]
        ]
        return await self._dlq.send(
            self._dlq_topic,
            value=message.value,  # type: ignore[attr-defined]
            key=message.key,  # type: ignore[attr-defined]
            headers=headers,
        )

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit after what the offsets cover is durable. A commit lost to a rebalance means
        the new owner reads those events again: at least once, never lost."""
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset commit failed, events will be read again: %s", exc)
