"""A real Debezium PostgreSQL connector: what it writes for a snapshot and for streamed changes
decodes into the rows the table holds."""

from __future__ import annotations

import time

import asyncpg
import pytest

from service.source.debezium import DebeziumChange, DebeziumDecoder
from tests.debezium.cdc import ConnectClient, Connector, RawRecord, connector_config, read_topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


def decode(records: list[RawRecord]) -> list[DebeziumChange]:
    decoder = DebeziumDecoder()
    return [decoder.decode(r.key, r.value, r.topic, r.partition, r.offset) for r in records]


async def test_snapshot_then_streamed_changes(
    cdc: str, connect: ConnectClient, source_db: asyncpg.Connection, uid: str
) -> None:
    table = f"cdc_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2),
            born date, seen_at timestamp, doc jsonb);
            INSERT INTO {table} VALUES
              (1, 'ada', 12.50, '1815-12-10', '2026-01-01 12:00:00.123456', '{{"a": 1}}'),
              (2, 'bob', 0.99, NULL, NULL, NULL),
              (3, 'cy', NULL, '2000-02-29', '1999-12-31 23:59:59', '[1, "x"]')"""
    )
    connector = Connector(f"e2e-{uid}", f"e2e{uid}", (table,))
    topic = connector.topic(table)
    started = time.monotonic()
    await connect.put(connector, connector_config(connector))
    try:
        await connect.wait_running(connector.name)
        snapshot = decode(await read_topics(cdc, [topic], lambda rs: len(rs) >= 3))
        first_records = time.monotonic() - started
        assert [(c.op, c.key) for c in snapshot] == [
            ("snapshot", {"id": 1}),
            ("snapshot", {"id": 2}),
            ("snapshot", {"id": 3}),
        ]
        assert [c.closes_snapshot for c in snapshot] == [False, False, True]
        assert len({c.snapshot_id for c in snapshot}) == 1
        assert snapshot[0].row == {
            "id": 1,
            "name": "ada",
            "price": "12.50",
            "born": "1815-12-10",
            "seen_at": "2026-01-01T12:00:00.123456",
            "doc": {"a": 1},
        }
        assert snapshot[2].row == {
            "id": 3,
            "name": "cy",
            "price": None,
            "born": "2000-02-29",
            "seen_at": "1999-12-31T23:59:59",
            "doc": [1, "x"],
        }

        await source_db.execute(f"INSERT INTO {table} (id, name, price) VALUES (4, 'dee', 1)")
        await source_db.execute(f"UPDATE {table} SET price = price + 0.01 WHERE id = 2")
        await source_db.execute(f"DELETE FROM {table} WHERE id = 3")
        await source_db.execute(f"TRUNCATE {table}")
        changes = decode(await read_topics(cdc, [topic], lambda rs: len(rs) >= 3 + 5))[3:8]
        assert [(c.op, c.row if c.op != "upsert" else c.row["price"]) for c in changes] == [
            ("upsert", "1.00"),
            ("upsert", "1.00"),
            ("delete", {"id": 3}),
            ("delete", {"id": 3}),  # the tombstone
            ("truncate", None),
        ]
        assert [c.tombstone for c in changes] == [False, False, False, True, False]
        commit_times = [c.emitted_at for c in changes if not c.tombstone]
        assert all(t is not None for t in commit_times)
        assert commit_times == sorted(commit_times)  # type: ignore[type-var]

        # Columns added and dropped while the connector runs: the next records carry the
        # table's new shape, converted, with no restart.
        await source_db.execute(f"ALTER TABLE {table} ADD COLUMN rate numeric(6,3)")
        await source_db.execute(f"INSERT INTO {table} (id, name, rate) VALUES (5, 'eve', 1.5)")
        await source_db.execute(f"ALTER TABLE {table} DROP COLUMN doc")
        await source_db.execute(f"INSERT INTO {table} (id, name) VALUES (6, 'fay')")
        reshaped = decode(await read_topics(cdc, [topic], lambda rs: len(rs) >= 10))[8:]
        assert [c.row for c in reshaped] == [
            {
                "id": 5,
                "name": "eve",
                "price": None,
                "born": None,
                "seen_at": None,
                "doc": None,
                "rate": "1.500",
            },
            {"id": 6, "name": "fay", "price": None, "born": None, "seen_at": None, "rate": None},
        ]
    finally:
        await connect.delete(connector.name)
    print(f"\nconnector: first snapshot records {first_records:.1f}s after it was added")


async def test_records_of_one_table_spread_over_six_partitions(
    cdc: str, connect: ConnectClient, source_db: asyncpg.Connection, uid: str
) -> None:
    table = f"cdc6_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} (id int PRIMARY KEY, amount numeric);
            INSERT INTO {table} SELECT i, i / 7.0 FROM generate_series(1, 40) i"""
    )
    connector = Connector(f"e2e6-{uid}", f"e2e6{uid}", (table,))
    topic = connector.topic(table)
    config = connector_config(connector, **{"topic.creation.default.partitions": "6"})
    await connect.put(connector, config)
    try:
        await connect.wait_running(connector.name)
        await source_db.execute(f"UPDATE {table} SET amount = -amount WHERE id <= 10")
        records = await read_topics(cdc, [topic], lambda rs: len(rs) >= 50)
    finally:
        await connect.delete(connector.name)
    changes = decode(records)
    assert len({r.partition for r in records}) > 1
    assert sum(c.closes_snapshot for c in changes) == 1
    # Per key, the partition keeps the order: each of the first ten ends negative.
    last: dict[int, str] = {}
    for c in sorted(changes, key=lambda c: (c.partition, c.offset)):
        assert c.row is not None
        last[c.row["id"]] = c.row["amount"]
    assert len(last) == 40
    assert all(last[i].startswith("-") for i in range(1, 11))
    assert last[14] == "2"  # Debezium sends numeric without trailing zeros


async def test_resnapshot_after_downtime(
    cdc: str, connect: ConnectClient, source_db: asyncpg.Connection, uid: str
) -> None:
    """The connector stopped (its slot dropped with it), the table changed meanwhile, the
    connector restarted with snapshot.mode=when_needed: a second snapshot of what the table now
    holds, and the row deleted meanwhile shows only as a key missing from it."""
    table = f"cdcre_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} (id int PRIMARY KEY, v text);
            INSERT INTO {table} VALUES (1, 'a'), (2, 'b'), (3, 'c')"""
    )
    connector = Connector(f"e2ere-{uid}", f"e2ere{uid}", (table,))
    topic = connector.topic(table)
    await connect.put(connector, connector_config(connector))
    try:
        await connect.wait_running(connector.name)
        await read_topics(cdc, [topic], lambda rs: len(rs) >= 3)
        await connect.stop(connector.name)
        await connect.wait_stopped(connector.name)
        await source_db.execute(f"DELETE FROM {table} WHERE id = 2")
        await source_db.execute(f"UPDATE {table} SET v = 'A' WHERE id = 1")
        await connect.put(
            connector, connector_config(connector, **{"snapshot.mode": "when_needed"})
        )
        await connect.resume(connector.name)
        await connect.wait_running(connector.name)
        changes = decode(
            await read_topics(
                cdc, [topic], lambda rs: sum(c.closes_snapshot for c in decode(rs)) >= 2
            )
        )
    finally:
        await connect.delete(connector.name)
    first, second = (
        [c for c in changes if c.op == "snapshot" and c.snapshot_id == sid]
        for sid in dict.fromkeys(c.snapshot_id for c in changes if c.op == "snapshot")
    )
    assert [c.row for c in first] == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}]
    assert sorted((c.row or {})["id"] for c in second) == [1, 3]
    assert {c.row["id"]: c.row["v"] for c in second if c.row} == {1: "A", 3: "c"}
    assert second[-1].closes_snapshot
    assert all(c.op == "snapshot" for c in changes)
