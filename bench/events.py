"""Change events in DESIGN's format, and getting them onto Kafka: up front for throughput
scenarios, open-loop at a fixed rate for the load scenarios."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.settings import KAFKA, MODEL_ID

KEY = MODEL_ID.encode()

#: How rows' ids follow one another: "serial" (1, 2, 3, ...) or "random" (the same distinct
#: ids scattered over 63 bits, as UUIDs or e-mail addresses fall into a key's index). Set once
#: from the profile before any event is made (`bench.run --keys`).
KEY_ORDER = "serial"
#: Odd, so multiplying by it modulo 2**63 maps distinct ids to distinct ids.
_SCATTER = 0x9E3779B97F4A7C15


def row_id(n: int) -> int:
    """The id of the n-th row, a bigint whatever KEY_ORDER is."""
    return n if KEY_ORDER == "serial" else (n * _SCATTER) % (1 << 63)


_FIRST = ("Alexandra", "Benjamin", "Charlotte", "Dmitri", "Eleanor", "Francesca", "Gabriel")
_LAST = ("Richardson", "Okonkwo", "Lindqvist", "Fernandez", "Nakamura", "Schneider", "Kowalski")
_COMPANY = (
    "Northwind Traders International",
    "Contoso Pharmaceuticals Group",
    "Initech Software Solutions",
    "Globex Logistics and Freight",
    "Umbrella Biotechnology Partners",
)
_TITLE = ("Senior Data Engineer", "VP of Revenue Operations", "Head of Customer Success")
_CITY = ("Berlin", "São Paulo", "Singapore", "Toronto", "Melbourne", "Nairobi", "Osaka")
_PLAN = ("free", "starter", "growth", "enterprise")

#: The model's columns; every one is mapped, so every one counts toward the diff.
COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "city",
    "plan",
    "mrr",
    "updated_at",
)


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_row(n: int, rng: random.Random, updated_at: str) -> dict[str, object]:
    """About 300 bytes of JSON in ten columns, keyed by `id` (`row_id(n)`)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return {
        "id": row_id(n),
        "email": f"{first.lower()}.{last.lower()}.{n}@example.com",
        "first_name": first,
        "last_name": last,
        "company": rng.choice(_COMPANY),
        "job_title": rng.choice(_TITLE),
        "city": rng.choice(_CITY),
        "plan": rng.choice(_PLAN),
        "mrr": round(rng.uniform(10, 50_000), 2),
        "updated_at": updated_at,
    }


def encode_event(rows: list[dict[str, object]], event_id: str, emitted_at: str) -> bytes:
    return orjson.dumps(
        {
            "modelId": MODEL_ID,
            "op": "upsert",
            "rows": rows,
            "eventId": event_id,
            "emittedAt": emitted_at,
        }
    )


def generate(total_rows: int, rows_per_event: int, first_id: int = 1, seed: int = 6) -> list[bytes]:
    """`total_rows` rows with distinct ids from `first_id`, in events of `rows_per_event`."""
    rng = random.Random(seed)
    stamp = now_rfc3339()
    events = []
    for start in range(first_id, first_id + total_rows, rows_per_event):
        stop = min(start + rows_per_event, first_id + total_rows)
        rows = [make_row(i, rng, stamp) for i in range(start, stop)]
        events.append(encode_event(rows, f"bench-{start}", stamp))
    return events


class LiveEvents:
    """1-row events made at send time, with `emittedAt` (and the row's `updated_at`) = now,
    and fresh ids, so every row is a new key."""

    def __init__(self, first_id: int, seed: int = 7) -> None:
        self.next_id = first_id
        self._rng = random.Random(seed)

    def __call__(self) -> bytes:
        stamp = now_rfc3339()
        n = self.next_id
        self.next_id += 1
        return encode_event([make_row(n, self._rng, stamp)], f"live-{n}", stamp)


async def create_topics(names: list[str], partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def delete_topics(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


def producer() -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=KAFKA,
        acks="all",
        linger_ms=5,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )


def row_keys(events: int, rows_per_event: int, first_id: int = 1) -> list[bytes | None]:
    """Each event's record key when events are keyed by row: its first row's id (what
    `generate` made), so a model's events spread over a topic's partitions."""
    return [str(row_id(first_id + i * rows_per_event)).encode() for i in range(events)]


async def produce_all(
    topic: str, events: list[bytes], keys: list[bytes | None] | None = None
) -> float:
    """Every event, acknowledged (keyed by the model, or by `keys`); returns the seconds it
    took."""
    started = time.monotonic()
    sender = producer()
    await sender.start()
    try:
        pending = []
        for n, value in enumerate(events):
            key = KEY if keys is None else keys[n]
            pending.append(await sender.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await sender.stop()
    return time.monotonic() - started


class PacedProducer:
    """Open loop: sends `rate` events a second whatever the consumer does, until stopped.
    Falling behind (the machine is busy) is caught up at once, so the offered load holds.
    Each tick's events go out as one record batch (aiokafka's `create_batch`): the load
    generator shares the machine with the service, and with a `send` per event it spent
    about 22 us of CPU an event (45 % of a core at 20,000 events/s), against 13 now (4.8 of
    them making the event)."""

    TICK = 0.002

    def __init__(self, topic: str, make_event: Callable[[], bytes], partition: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        self.make_event = make_event
        self.sent = 0
        self._sender = producer()

    async def __aenter__(self) -> PacedProducer:
        await self._sender.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sender.stop()

    async def _send(self, n: int) -> list[asyncio.Future[Any]]:
        """n events made now, in as few record batches as they fit in."""
        sent = []
        batch = self._sender.create_batch()
        for _ in range(n):
            value = self.make_event()
            if batch.append(key=KEY, value=value, timestamp=None) is None:
                batch.close()
                sent.append(
                    await self._sender.send_batch(batch, self.topic, partition=self.partition)
                )
                batch = self._sender.create_batch()
                batch.append(key=KEY, value=value, timestamp=None)
        batch.close()
        sent.append(await self._sender.send_batch(batch, self.topic, partition=self.partition))
        return sent

    async def run(self, rate: float, seconds: float, stop: asyncio.Event | None = None) -> float:
        """Sends for `seconds` (or until `stop`); returns the achieved rate (events/s)."""
        started = time.monotonic()
        sent = 0
        pending: list[asyncio.Future[Any]] = []
        while (elapsed := time.monotonic() - started) < seconds:
            if stop is not None and stop.is_set():
                break
            due = int(rate * elapsed) + 1 - sent
            if due > 0:
                pending.extend(await self._send(due))
                sent += due
            if len(pending) > 1_000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(self.TICK)
        await asyncio.gather(*pending)
        self.sent += sent
        return sent / max(time.monotonic() - started, 1e-9)
