"""One contract for every destination type, on real infrastructure, and for the in-memory fake.

Each destination is paired with a reader that tells what the far side now holds per key, so
the same assertions hold for all of them: added and changed rows arrive with their data,
removed rows go away, writing a batch twice changes nothing, and a destination that can refuse
single rows refuses only those."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from service.core.interfaces import Batch, BatchResult, DestinationWriter
from service.core.models import Destination
from service.core.rows import RowChange
from service.destinations.registry import DestinationContext, open_destination
from tests.conftest import kafka_address
from tests.support import LOCAL_ONLY, Receiver

State = dict[str, dict[str, Any]]


class MemoryDestination(DestinationWriter):
    """The in-memory fake: a dict by key; rows whose data has `"reject": true` are refused."""

    type_name = "memory"

    def __init__(self) -> None:
        self.state: State = {}

    async def write(self, batch: Batch) -> BatchResult:
        rejected = {}
        for row in batch.rows:
            if row.data.get("reject"):
                rejected[row.key] = "refused by the fake"
            elif row.op == "removed":
                self.state.pop(row.key, None)
            else:
                self.state[row.key] = row.data
        return BatchResult(rejected)


@dataclass
class Subject:
    writer: DestinationWriter
    read: Callable[[], Awaitable[State]]
    rejects_rows: bool


def receiver_state(receiver: Receiver) -> State:
    state: State = {}
    for row in receiver.rows:
        if row["op"] == "removed":
            state.pop(row["key"], None)
        else:
            state[row["key"]] = row["data"]
    return state


async def kafka_state(kafka: str, topic: str) -> State:
    """The topic read as a compacted table: the last value per key, tombstones remove."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    state: State = {}
    try:
        end = await consumer.end_offsets(list(consumer.assignment()))

        async def behind() -> bool:
            return any([await consumer.position(tp) < offset for tp, offset in end.items()])

        while await behind():
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    key = record.key.decode()
                    change = orjson.loads(record.value) if record.value is not None else None
                    if change is None or change["op"] == "removed":
                        state.pop(key, None)
                    else:
                        state[key] = change["data"]
    finally:
        await consumer.stop()
    return state


POSTGRES_URL = os.environ.get(
    "SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync"
)


async def postgres_table(table: str) -> Callable[[], Awaitable[State]]:
    """A fresh table whose CHECK refuses rows with `reject`, and a reader of its rows."""
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except Exception as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES_URL} ({exc!r}); run `make pg-up`")
    try:
        await conn.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, "
            "reject boolean CHECK (reject IS NOT TRUE))"
        )
    finally:
        await conn.close()

    async def read() -> State:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            rows = await conn.fetch(f"SELECT row_to_json(t)::text AS j FROM {table} t")
        finally:
            await conn.close()
        state: State = {}
        for row in rows:
            data = {k: v for k, v in orjson.loads(row["j"]).items() if v is not None}
            state[str(data["id"])] = data
        return state

    return read


@pytest.fixture(params=["memory", "webhook", "kafka", "kafka-tombstone", "postgres"])
async def subject(request: pytest.FixtureRequest, receiver: Receiver) -> AsyncIterator[Subject]:
    kind = request.param
    # Only the kafka kinds need the broker: the others run without one (`make test-unit`).
    kafka_bootstrap = (
        request.getfixturevalue("kafka_bootstrap") if kind.startswith("kafka") else kafka_address()
    )
    if kind == "memory":
        fake = MemoryDestination()

        async def read_fake() -> State:
            return dict(fake.state)

        yield Subject(fake, read_fake, rejects_rows=True)
        return

    def rejecting(payload: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        bad = [
            {"key": r["key"], "error": "bad row"}
            for r in payload["rows"]
            if r["data"].get("reject")
        ]
        return 200, {"rejected": bad}, {}

    read_table = None
    if kind == "webhook":
        receiver.reply_with = rejecting
        configuration: dict[str, Any] = {"url": receiver.url}
    elif kind == "postgres":
        table = f"contract_{uuid.uuid4().hex[:8]}"
        read_table = await postgres_table(table)
        configuration = {"dsn": POSTGRES_URL, "table": table, "keyColumn": "id"}
    else:
        topic = f"contract-{uuid.uuid4().hex[:8]}"
        removed_as = "tombstone" if kind == "kafka-tombstone" else "event"
        configuration = {"topic": topic, "removedAs": removed_as}
    destination = Destination(
        id="1", name="d", slug="d", type=kind.split("-")[0], configuration=configuration
    )
    writer = open_destination(destination, DestinationContext(kafka_bootstrap, LOCAL_ONLY))
    await writer.open()

    async def read() -> State:
        if kind == "webhook":
            return receiver_state(receiver)
        if read_table is not None:
            return await read_table()
        return await kafka_state(kafka_bootstrap, configuration["topic"])

    try:
        yield Subject(writer, read, rejects_rows=kind in ("webhook", "postgres"))
    finally:
        await writer.close()


def change(op: str, key: int, **data: Any) -> RowChange:
    return RowChange(op, str(key), {"id": key, **data}, seq=key)  # type: ignore[arg-type]


async def write(subject: Subject, *rows: RowChange, n: int = 1) -> BatchResult:
    return await subject.writer.write(Batch("1", "9", f"9-{n}", list(rows)))


async def test_added_changed_and_removed_rows_arrive(subject: Subject) -> None:
    result = await write(subject, change("added", 1, name="a"), change("added", 2, name="b"))
    assert result.rejected == {}
    assert await subject.read() == {"1": {"id": 1, "name": "a"}, "2": {"id": 2, "name": "b"}}
    await write(subject, change("changed", 1, name="a2"), change("removed", 2, name="b"), n=2)
    assert await subject.read() == {"1": {"id": 1, "name": "a2"}}


async def test_writing_the_same_batch_twice_changes_nothing(subject: Subject) -> None:
    rows = [change("added", i, name=f"n{i}") for i in range(20)] + [change("removed", 3)]
    await write(subject, *rows)
    once = await subject.read()
    await write(subject, *rows)
    assert await subject.read() == once
    assert len(once) == 19


async def test_a_refused_row_leaves_the_others_delivered(subject: Subject) -> None:
    result = await write(
        subject, change("added", 1), change("added", 2, reject=True), change("added", 3)
    )
    if subject.rejects_rows:
        assert set(result.rejected) == {"2"}
        assert set(await subject.read()) == {"1", "3"}
    else:  # a Kafka topic takes any row: nothing is refused one by one
        assert result.rejected == {}
        assert set(await subject.read()) == {"1", "2", "3"}
