"""Debezium topics as models, end to end: a real PostgreSQL connector, `sync-service serve`, a
webhook and a PostgreSQL table; after a snapshot, streamed changes and a re-snapshot of rows
changed while the connector was down, each destination holds what the table holds, key by key."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
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
        models.append({"id": "2", "name": "db", "slug": "db", "primaryKey": "id", "sourceId": "1"})
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


def held_by_sync(receiver: Receiver, sync_id: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for request in receiver.requests:
        body = request.json
        if body["syncId"] != sync_id:
            continue
        for row in body["rows"]:
            if row["op"] == "removed":
                out.pop(row["key"], None)
            else:
                out[row["key"]] = row["data"]
    return out


async def test_dropped_columns_unsent_values_and_truncate(
    cdc: str,
    connect: ConnectClient,
    source_db: asyncpg.Connection,
    uid: str,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    """Three models over one table: one reads `name`, one a large TOASTed `notes`, one `extra`.
    A column dropped, an update that leaves `notes` unsent, then a truncate."""
    table = f"e2eshape_{uid}"
    await source_db.execute(
        f"""CREATE TABLE {table} (id int PRIMARY KEY, name text, notes text, extra int);
            ALTER TABLE {table} ALTER COLUMN notes SET STORAGE EXTERNAL;
            INSERT INTO {table} VALUES (1, 'a', repeat('n', 20000), 10), (2, 'b', 'short', 20)"""
    )
    connector = Connector(f"syncshape-{uid}", f"syncshape{uid}", (table,))
    topic = connector.topic(table)
    resources = catalog(topic, receiver.url, None)
    resources["models"] = [
        {"id": m, "name": f"m{m}", "slug": f"m{m}", "primaryKey": "id", "sourceId": "1"}
        for m in ("1", "2", "3")
    ]
    base = resources["syncs"][0]
    resources["syncs"] = [
        {
            **base,
            "id": m,
            "slug": f"s{m}",
            "modelId": m,
            "configuration": {
                "mode": "mirror",
                "mappings": [{"from": "id", "to": "id"}, {"from": column, "to": column}],
            },
        }
        for m, column in (("1", "name"), ("2", "notes"), ("3", "extra"))
    ]
    harness = Harness(tmp_path, cdc, uid, receiver)
    harness.env["SYNC_API_TOKENS"] = "cdc-token=1"
    harness.write_resources(resources)
    await connect.put(connector, connector_config(connector))
    try:
        await connect.wait_running(connector.name)
        await read_topics(cdc, [topic], lambda rs: len(rs) >= 2)
        service = await harness.service()
        await wait_for(
            lambda: all(len(held_by_sync(receiver, s)) == 2 for s in "123"), what="the snapshot"
        )
        await source_db.execute(f"UPDATE {table} SET name = 'A' WHERE id = 1")  # notes unsent
        await source_db.execute(f"ALTER TABLE {table} DROP COLUMN extra")
        await source_db.execute(f"INSERT INTO {table} (id, name, notes) VALUES (3, 'c', 'x')")
        # Each sync runs on its own: wait for both to deliver the new row.
        await wait_for(
            lambda: (
                held_by_sync(receiver, "1").get("3") == {"id": 3, "name": "c"}
                and "3" in held_by_sync(receiver, "2")
            ),
            what="rows after the schema change",
        )
        assert held_by_sync(receiver, "1")["1"] == {"id": 1, "name": "A"}
        assert held_by_sync(receiver, "2")["3"] == {"id": 3, "notes": "x"}

        async def rejected(sync_id: str) -> list[str]:
            url = f"{service.base}/api/v1/syncs/{sync_id}/rows?status=rejected"
            headers = {"Authorization": "Bearer cdc-token"}
            async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
                assert r.status == 200
                return [str(row["error"]) for row in (await r.json())["data"]]

        async def both_rejected() -> bool:
            return bool(await rejected("2")) and bool(await rejected("3"))

        await wait_for(both_rejected, what="rejected rows of models 2 and 3")
        (unsent,) = await rejected("2")
        assert "notes" in unsent and "REPLICA IDENTITY FULL" in unsent
        (dropped,) = await rejected("3")
        assert "extra" in dropped and "dropped" in dropped
        # The unsent value left the destination's copy as it was.
        assert held_by_sync(receiver, "2")["1"]["notes"] == "n" * 20000

        await source_db.execute(f"TRUNCATE {table}")
        await wait_for(
            lambda: all(held_by_sync(receiver, s) == {} for s in "123"),
            what="the truncate",
        )
    finally:
        await connect.delete(connector.name)
        await harness.close()
        await source_db.execute(f"DROP TABLE IF EXISTS {table}")
