"""Records real Debezium output into tests/fixtures/debezium/ (run by hand, needs
scripts/connect/cdc.sh up): `python -m tests.debezium.record_fixtures`.

One table of every column type the decoder converts and one with a composite key, read by five
connectors: the envelope with and without schemas, the envelope with Kafka Connect's own time
types and decimals as JSON numbers, and the ExtractNewRecordState form with and without
schemas. The snapshot, then inserts, updates (a key change, an unchanged TOASTed
column), deletes and a truncate. Each file holds one JSON object a line: topic, partition,
offset, and the key and value exactly as Kafka carried them (text, or null)."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import orjson

from tests.debezium.cdc import (
    ConnectClient,
    Connector,
    RawRecord,
    connector_config,
    pg_dsn,
    read_topics,
    start_cdc,
)

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"

CREATE = """
DROP TABLE IF EXISTS fx_types, fx_pairs;
CREATE TABLE fx_types (
  id int PRIMARY KEY,
  name text NOT NULL,
  price numeric(10,2),
  amount numeric,
  born date,
  seen_at timestamp,
  seen_at_ms timestamp(3),
  changed_at timestamptz,
  opens time,
  opens_ms time(3),
  doc json,
  docb jsonb,
  ref uuid,
  note text
);
CREATE TABLE fx_pairs (tenant text, id bigint, label text, PRIMARY KEY (tenant, id));
"""

SEED = """
INSERT INTO fx_types VALUES
 (1, 'alpha', 12.50, 3.14159, '2026-01-01', '2026-01-01 12:00:00.123456',
  '2026-01-01 12:00:00.123', '2026-01-01 12:00:00.5+02', '08:30:00.000001', '08:30:00.25',
  '{"a": 1, "b": [1, 2]}', '{"tier": "gold", "n": 1.5}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  NULL),
 (2, 'beta', -0.05, -12345678901234567890.123456789, '1969-12-31', '1969-12-31 23:59:59.999999',
  '1900-01-01 00:00:00', '1999-12-31 23:59:59+00', '23:59:59.999999', '00:00:00',
  '[]', 'null', '00000000-0000-0000-0000-000000000000', NULL),
 (3, 'gamma', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 200) i));
INSERT INTO fx_pairs VALUES ('acme', 1, 'one'), ('acme', 2, 'two'), ('initech', 1, 'uno');
"""

CHANGES = [
    "INSERT INTO fx_types (id, name, price, amount, born, seen_at, docb) VALUES "
    "(4, 'delta', 99999999.99, 0, '2000-02-29', '2000-02-29 00:00:00', '{\"x\": [true, null]}')",
    "UPDATE fx_types SET price = 13.00, amount = 1e-10 WHERE id = 1",
    "UPDATE fx_types SET name = 'gamma2' WHERE id = 3",  # note stays TOASTed and unchanged
    "UPDATE fx_types SET id = 5 WHERE id = 2",  # a key change: delete 2, create 5
    "DELETE FROM fx_types WHERE id = 4",
    "TRUNCATE fx_pairs",
    "INSERT INTO fx_pairs VALUES ('acme', 3, 'three')",
]

VARIANTS = {
    "envelope_schema": {"schemas": True},
    "envelope_plain": {"schemas": False},
    "flat_schema": {
        "schemas": True,
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.add.fields": "op,table,lsn,source.ts_ms,source.snapshot",
        "transforms.unwrap.delete.tombstone.handling.mode": "rewrite-with-tombstone",
    },
    "envelope_connect_numeric": {
        "schemas": True,
        "time.precision.mode": "connect",
        "value.converter.decimal.format": "NUMERIC",
        "key.converter.decimal.format": "NUMERIC",
    },
    "flat_plain": {
        "schemas": False,
        "transforms": "unwrap",
        "transforms.unwrap.type": "io.debezium.transforms.ExtractNewRecordState",
        "transforms.unwrap.add.fields": "op",
        "transforms.unwrap.delete.tombstone.handling.mode": "rewrite",
    },
}


def line(r: RawRecord) -> bytes:
    return orjson.dumps(
        {
            "topic": r.topic.split(".", 1)[1],
            "partition": r.partition,
            "offset": r.offset,
            "key": None if r.key is None else r.key.decode(),
            "value": None if r.value is None else r.value.decode(),
        }
    )


def count(records: list[RawRecord], topic: str) -> int:
    return sum(1 for r in records if r.topic == topic)


async def main() -> None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    db = await asyncpg.connect(pg_dsn())
    await db.execute(CREATE)
    await db.execute(SEED)
    run = uuid.uuid4().hex[:6]
    connect = ConnectClient()
    connectors = {
        v: Connector(f"fx-{v}-{run}".replace("_", "-"), f"fx{run}{v}", ("fx_types", "fx_pairs"))
        for v in VARIANTS
    }
    try:
        for variant, options in VARIANTS.items():
            c = connectors[variant]
            opts = dict(options)
            schemas = bool(opts.pop("schemas"))
            await connect.put(c, connector_config(c, schemas=schemas, **opts))
        for c in connectors.values():
            await connect.wait_running(c.name)
        # The snapshot: three rows and three pairs per connector.
        for c in connectors.values():
            t, p = c.topic("fx_types"), c.topic("fx_pairs")
            await read_topics(
                bootstrap, [t, p], lambda rs, t=t, p=p: count(rs, t) >= 3 and count(rs, p) >= 3
            )
        for sql in CHANGES:
            await db.execute(sql)
        OUT.mkdir(parents=True, exist_ok=True)
        for variant, c in connectors.items():
            t, p = c.topic("fx_types"), c.topic("fx_pairs")
            # Streamed: the insert, two updates, the key change (delete, tombstone, create;
            # the flattened forms differ), the delete and its tombstone; the truncate and an
            # insert on the pairs. Read until quiet.
            seen: list[int] = []

            def settled(
                rs: list[RawRecord], t: str = t, p: str = p, seen: list[int] = seen
            ) -> bool:
                seen.append(len(rs))
                return count(rs, p) >= 4 and count(rs, t) >= 8 and seen[-12:] == [len(rs)] * 12

            records = await read_topics(bootstrap, [t, p], settled, timeout=90)
            records.sort(key=lambda r: (r.topic, r.partition, r.offset))
            (OUT / f"{variant}.jsonl").write_bytes(b"\n".join(map(line, records)) + b"\n")
            print(variant, len(records))
    finally:
        for c in connectors.values():
            await connect.delete(c.name)
        await connect.close()
        await db.close()


if __name__ == "__main__":
    print(f"cdc up in {start_cdc():.1f}s")
    asyncio.run(main())
