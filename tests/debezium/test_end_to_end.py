"""Debezium topics as models, end to end: a real PostgreSQL connector, `sync-service serve`, a
webhook and a PostgreSQL table; after a snapshot, streamed changes and a re-snapshot of rows
changed while the connector was down, each destination holds what the table holds, key by key."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.debezium.cdc import ConnectClient, Connector, connector_config, pg_dsn, read_topics
from tests.e2e.conftest import Harness
from tests.support import Receiver, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]

COLUMNS = ("id", "name", "price", "born", "seen_at", "doc")
TABLE = """(id int PRIMARY KEY, name text, price numeric(10,2), born date, seen_at timestamp,
           doc jsonb)"""
#: Both tables read the same way: values as PostgreSQL writes them.
AS_TEXT = "SELECT id, name, price::text, born::text, seen_at::text, doc::text FROM {} ORDER BY id"


def catalog(topic: str, receiver_url: str, target: str | None) -> dict[str, Any]:
    """One Debezium source; a model per destination over it (webhook, PostgreSQL table)."""
    mappings = [{"from": c, "to": c} for c in COLUMNS]
    models = [{"id": "1", "name": "web", "slug": "web", "primaryKey": "id", "sourceId": "1"}]
    destinations: list[dict[str, Any]] = [
        {
            "id": "1",
            "name": "hook",
            "slug": "hook",
            "type": "webhook",
            "configuration": {"url": receiver_url},
        }
    ]
    syncs: list[dict[str, Any]] = [
        {
            "id": "1",
            "slug": "to-hook",
            "modelId": "1",
            "destinationId": "1",
            "schedule": {"type": "continuous", "schedule": {"lingerMs": 50}},
            "configuration": {"mode": "mirror", "mappings": mappings},
        }
    ]
    if target is not None:
        models.append(
            {"id": "2", "name": "db", "slug": "db", "primaryKey": "id", "sourceId": "1"}
        )
        destinations.append(
            {
                "id": "2",
                "name": "copy",
                "slug": "copy",
                "type": "postgres",
                "configuration": {"dsn": pg_dsn(), "table": target},
            }
        )
        syncs.append({**syncs[0], "id": "2", "slug": "to-db", "modelId": "2", "destinationId": "2"})
    return {
        "sources": [
            {
                "id": "1",
                "name": "pg",
                "slug": "pg",
                "type": "kafka",
                "configuration": {"topic": topic, "format": "debezium"},
            }
        ],
        "models": models,
        "destinations": destinations,
        "syncs": syncs,
    }


def held(receiver: Receiver) -> dict[str, dict[str, Any]]:
    """What the webhook's receiver holds: each row's last version, removed rows gone."""
    out: dict[str, dict[str, Any]] = {}
    for row in receiver.rows:
        if row["op"] == "removed":
            out.pop(row["key"], None)
        else:
            out[row["key"]] = row["data"]
    return out


async def table_rows(db: asyncpg.Connection, table: str) -> dict[str, dict[str, Any]]:
    """The table's rows as the decoder delivers them (Debezium's conversions, ours)."""
    out = {}
    for r in await db.fetch(f"SELECT * FROM {table}"):
        row = dict(r)
        for column in ("price", "born"):
            if row.get(column) is not None:
                row[column] = str(row[column])
        if row.get("seen_at") is not None:
            row["seen_at"] = row["seen_at"].isoformat()
        if row.get("doc") is not None:
            row["doc"] = json.loads(row["doc"])
        out[str(row["id"])] = row
    return out


async def same_as_table(
    db: asyncpg.Connection, table: str, receiver: Receiver, target: str | None, what: str
) -> None:
    async def same() -> bool:
        expected = await table_rows(db, table)
        if held(receiver) != expected:
            return False
        if target is None:
            return True
        return await db.fetch(AS_TEXT.format(target)) == await db.fetch(AS_TEXT.format(table))

    try:
        await wait_for(same, timeout=60, what=what)
    except AssertionError:
        expected = await table_rows(db, table)
        got = held(receiver)
        diff = {k: (expected.get(k), got.get(k)) for k in expected.keys() | got.keys()}
        raise AssertionError(
            f"{what}: {[(k, v) for k, v in diff.items() if v[0] != v[1]][:10]}"
        ) from None


async def resnapshot(connect: ConnectClient, connector: Connector, config: dict[str, str]) -> None:
    """Starts a stopped connector again with a snapshot of what the table holds now."""
    await connect.put(connector, {**config, "snapshot.mode": "when_needed"})
    await connect.resume(connector.name)
    await connect.wait_running(connector.name)


async def test_a_table_reaches_a_webhook_and_a_postgres_table_key_by_key(
    cdc: str,
    connect: ConnectClient,
    source_db: asyncpg.Connection,
    uid: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    table, target = f"e2e_src_{uid}", f"e2e_dst_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} {TABLE}; CREATE TABLE {target} {TABLE};
            INSERT INTO {table} VALUES
              (1, 'ada', 12.50, '1815-12-10', '2026-01-01 12:00:00.123456', '{{"a": 1}}'),
              (2, 'bob', 0.99, NULL, NULL, NULL),
              (3, 'cy', NULL, '2000-02-29', '1999-12-31 23:59:59', '[1, "x"]'),
              (4, 'dee', -7.00, '1970-01-01', '1969-07-20 20:17:40', '"text"')"""
    )
    connector = Connector(f"sync-{uid}", f"sync{uid}", (table,))
    topic = connector.topic(table)
    config = connector_config(connector)
    harness = Harness(tmp_path, cdc, uid, receiver)
    harness.write_resources(catalog(topic, receiver.url, target))
    started = time.monotonic()
    await connect.put(connector, config)
    try:
        await connect.wait_running(connector.name)
        await read_topics(cdc, [topic], lambda rs: len(rs) >= 4)
        service = await harness.service()
        await same_as_table(source_db, table, receiver, target, "the initial snapshot")
        snapshot_done = time.monotonic() - started

        await source_db.execute(
            f"""INSERT INTO {table} VALUES (5, 'eve', 1234567.89, '2026-02-28',
                  '2026-03-01 00:00:00.000001', '{{"nested": {{"b": [1, 2]}}}}');
                UPDATE {table} SET price = price + 0.01, doc = '{{"a": 2}}' WHERE id = 2;
                UPDATE {table} SET name = 'ADA' WHERE id = 1;
                DELETE FROM {table} WHERE id = 3"""
        )
        await same_as_table(source_db, table, receiver, target, "inserts, updates, deletes")

        # Down for a while: rows deleted and changed meanwhile reach the destinations through
        # the next snapshot, which plans the keys absent from it as removed.
        await connect.stop(connector.name)
        await connect.wait_stopped(connector.name)
        await source_db.execute(
            f"""DELETE FROM {table} WHERE id IN (1, 4);
                UPDATE {table} SET name = 'BOB', born = '2001-01-01' WHERE id = 2;
                INSERT INTO {table} (id, name) VALUES (6, 'fay')"""
        )
        await resnapshot(connect, connector, config)
        await same_as_table(source_db, table, receiver, target, "the re-snapshot")
        await source_db.execute(f"INSERT INTO {table} (id, name) VALUES (7, 'gil')")
        await same_as_table(source_db, table, receiver, target, "streaming after the re-snapshot")
        assert await service.metric("sync_rows_rejected_total") == 0
    finally:
        await connect.delete(connector.name)
        await harness.close()
        await source_db.execute(f"DROP TABLE IF EXISTS {table}, {target}")
    print(f"\nsnapshot synced {snapshot_done:.1f}s after the connector was added")


async def test_a_snapshot_over_six_partitions_removes_only_what_the_table_lost(
    cdc: str,
    connect: ConnectClient,
    source_db: asyncpg.Connection,
    uid: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    table = f"e2e6_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} {TABLE};
            INSERT INTO {table} (id, name, price)
            SELECT i, 'n' || i, i / 7.0 FROM generate_series(1, 60) i"""
    )
    connector = Connector(f"sync6-{uid}", f"sync6{uid}", (table,))
    topic = connector.topic(table)
    config = connector_config(connector, **{"topic.creation.default.partitions": "6"})
    harness = Harness(tmp_path, cdc, uid, receiver)
    harness.write_resources(catalog(topic, receiver.url, None))
    await connect.put(connector, config)
    try:
        await connect.wait_running(connector.name)
        await read_topics(cdc, [topic], lambda rs: len(rs) >= 60)
        await harness.service()
        await same_as_table(source_db, table, receiver, None, "the snapshot over 6 partitions")
        await source_db.execute(f"UPDATE {table} SET price = -price WHERE id <= 10")
        await same_as_table(source_db, table, receiver, None, "updates over 6 partitions")
        await connect.stop(connector.name)
        await connect.wait_stopped(connector.name)
        await source_db.execute(f"DELETE FROM {table} WHERE id % 5 = 0")
        await resnapshot(connect, connector, config)
        await same_as_table(source_db, table, receiver, None, "the re-snapshot over 6 partitions")
        assert len(held(receiver)) == 48
    finally:
        await connect.delete(connector.name)
        await harness.close()
        await source_db.execute(f"DROP TABLE IF EXISTS {table}")
