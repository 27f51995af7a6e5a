"""KafkaSource: fetches record batches from the consumer group and decodes them."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from service.core.events import Change, InvalidEvent
from service.core.metrics import Metrics
from service.source.decode import decode_event_lean
from service.source.dlq import DeadLetter
from service.source.invalid_rate import InvalidRateMonitor

log = logging.getLogger(__name__)

#: Decodes one record (key, value) into an event or raises InvalidEvent; one per topic format.
Decoder = Callable[[bytes | None, bytes | None], Change]

#: Tokens that JSON parsers turn into non-finite floats: NaN, Infinity, an exponent or a run of
#: digits too big for a double. A message with none of them can hold no such value, so only
#: the few that match are looked at value by value. The service's own events read by orjson
#: need no look: orjson refuses all of these.
_NON_FINITE_HINT = re.compile(rb"NaN|Infinity|[eE]\+?[0-9]{3}|[0-9]{309}")


@dataclass(slots=True)
class EventBatch:
    """Decoded events of one fetch and the offsets to commit once they are durable."""

    events: list[Change] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    records: int = 0
    #: The events' topics as runs: events[previous end:end] came from `topic`.
    spans: list[tuple[str, int]] = field(default_factory=list)
    #: Indices of events whose raw message may hold non-finite numbers.
    suspect: set[int] = field(default_factory=set)
    #: The record each event came from (events[i] from messages[i]), for the DLQ.
    messages: list[Any] = field(default_factory=list)
    #: Records that could not be decoded; they go to the DLQ before the offsets are committed.
    dead: list[DeadLetter] = field(default_factory=list)
    #: The consumer group generation the batch was fetched in (see `KafkaSource.generation`).
    generation: int = 0

    def topics_of_events(self) -> list[str]:
        """The topic of each event, in order."""
        out: list[str] = []
        start = 0
        for topic, end in self.spans:
            out.extend([topic] * (end - start))
            start = end
        return out


class _Membership(ConsumerRebalanceListener):
    def __init__(self) -> None:
        self.joined = asyncio.Event()
        self.generation = 0
        #: Awaited before partitions move: finishes (stores and commits) the work in flight.
        self.on_revoke: Callable[[], Awaitable[None]] | None = None

    async def on_partitions_revoked(self, revoked: object) -> None:
        # Every batch fetched before this point is stale: positions restart from the committed
        # offsets once partitions are assigned again.
        self.generation += 1
        if self.on_revoke is not None and revoked:
            try:
                await self.on_revoke()
            except Exception:
                log.exception("finishing the work in flight before a rebalance failed")

    async def on_partitions_assigned(self, assigned: object) -> None:
        self.joined.set()


class KafkaSource:
    """Owns the consumer. `fetch` never raises for bad input: undecodable records come back in
    `EventBatch.dead`, for the caller to send to the DLQ before it commits the batch."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        metrics: Metrics,
        max_records: int = 2000,
        invalid_rate: InvalidRateMonitor | None = None,
        dlq_topic: str = "",
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._max_records = max_records
        self._membership = _Membership()
        self._invalid_rate = invalid_rate or InvalidRateMonitor(threshold=0.5, window=1000)
        self._dlq_topic = dlq_topic
        self._topics: frozenset[str] = frozenset()
        self._decoders: Mapping[str, Decoder] = {}

    @property
    def joined(self) -> bool:
        return self._membership.joined.is_set()

    @property
    def generation(self) -> int:
        """Grows at every partition revocation."""
        return self._membership.generation

    def on_revoke(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._membership.on_revoke = callback

    def subscribe(self, topics: set[str], decoders: Mapping[str, Decoder] | None = None) -> None:
        """Consume exactly these topics; a change triggers a rebalance, not a restart. A topic
        without a decoder in `decoders` carries the service's own change events."""
        self._decoders = decoders or {}
        wanted = frozenset(topics)
        if wanted != self._topics:
            log.info("consuming topics %s", ", ".join(sorted(wanted)))
            self._consumer.subscribe(topics=sorted(wanted), listener=self._membership)
            self._topics = wanted

    async def fetch(self, timeout_ms: int = 500) -> EventBatch:
        records = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self._max_records)
        # Stamped on return: records getmany hands out belong to the assignment of that moment
        # (the fetcher drops what it fetched for partitions revoked meanwhile).
        batch = EventBatch(generation=self._membership.generation)
        if not records:
            return batch
        invalid: dict[str, int] = {}
        events = batch.events
        hint = _NON_FINITE_HINT.search
        for tp, messages in records.items():
            self._metrics.events_consumed.labels(tp.topic).inc(len(messages))
            batch.records += len(messages)
            dead_before = len(batch.dead)
            decode = self._decoders.get(tp.topic)
            for message in messages:
                try:
                    if decode is None:
                        event, finite = decode_event_lean(message.key, message.value)
                    else:
                        event, finite = decode(message.key, message.value), False
                except InvalidEvent as exc:
                    invalid[exc.reason] = invalid.get(exc.reason, 0) + 1
                    batch.dead.append(DeadLetter.of(message, exc))
                    continue
                # A tombstone has no value.
                if not finite and message.value and hint(message.value):
                    batch.suspect.add(len(events))
                events.append(event)
                batch.messages.append(message)
            batch.spans.append((tp.topic, len(events)))
            self._watch_invalid_rate(tp, len(messages), len(batch.dead) - dead_before)
            batch.offsets[tp] = messages[-1].offset + 1
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - batch.offsets[tp])
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
        for reason, n in invalid.items():
            self._metrics.events_invalid.labels(reason).inc(n)
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

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        """The end offset of every partition of the topic (the next offset to be written)."""
        partitions = self._consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        return dict(await self._consumer.end_offsets(tps))

    def partition_count(self, topic: str) -> int:
        """The topic's partitions as the consumer's metadata knows them (0 when unknown)."""
        return len(self._consumer.partitions_for_topic(topic) or ())

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of a partition, whoever consumes it."""
        return await self._consumer.committed(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit after what the offsets cover is durable; False when the broker refused. A
        commit lost to a rebalance means the new owner reads those events again: at least
        once, never lost."""
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("offset commit failed, events will be read again: %s", exc)
            return False
        return True
