"""`make demo-cdc`: a Debezium PostgreSQL connector streams a table's changes to Kafka; this
changes rows in the table and prints each change as the service decodes it, with its delay
from the database commit. Needs scripts/connect/cdc.sh up (scripts/demo-cdc.sh runs it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from datetime import UTC, datetime

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from service.source.debezium import DebeziumChange, DebeziumDecoder
from tests.debezium.cdc import ConnectClient, Connector, connector_config, pg_dsn

TABLE = "demo_customers"

SETUP = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (
  id int PRIMARY KEY,
  name text NOT NULL,
  plan text NOT NULL,
  mrr numeric(10,2) NOT NULL,
  signed_up date NOT NULL,
  updated_at timestamp NOT NULL DEFAULT now(),
  traits jsonb
);
INSERT INTO {TABLE} (id, name, plan, mrr, signed_up, traits) VALUES
  (1, 'Ada Lovelace', 'pro', 49.00, '2024-03-01', '{{"seats": 5}}'),
  (2, 'Grace Hopper', 'free', 0.00, '2025-07-15', NULL),
  (3, 'Alan Turing', 'team', 199.90, '2023-11-30', '{{"seats": 25, "sso": true}}');
"""

CHANGES = [
    (
        "a new customer",
        f"INSERT INTO {TABLE} (id, name, plan, mrr, signed_up) "
        "VALUES (4, 'Katherine Johnson', 'pro', 49.00, current_date)",
    ),
    (
        "an upgrade",
        f"UPDATE {TABLE} SET plan = 'pro', mrr = 49.00, updated_at = now() WHERE id = 2",
    ),
    (
        "a price change",
        f"UPDATE {TABLE} SET mrr = mrr * 1.1, updated_at = now() WHERE plan = 'pro'",
    ),
    ("a churn", f"DELETE FROM {TABLE} WHERE id = 3"),
]


def show(change: DebeziumChange) -> str:
    delay = ""
    if change.emitted_at is not None:
        ms = (datetime.now(UTC) - change.emitted_at).total_seconds() * 1000
        delay = f"  ({ms:.0f} ms after commit)"
    what = change.op + (f"[{change.snapshot}]" if change.snapshot else "")
    if change.tombstone:
        what += "(tombstone)"
    row = orjson.dumps(change.row).decode() if change.row is not None else ""
    return f"  {what:<34} {row}{delay}"


async def main(follow: bool) -> None:
    bootstrap = os.environ.get(
        "KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
    )
    db = await asyncpg.connect(pg_dsn())
    await db.execute(SETUP)
    run = uuid.uuid4().hex[:6]
    connector = Connector(f"demo-cdc-{run}", f"demo{run}", (TABLE,))
    topic = connector.topic(TABLE)
    connect = ConnectClient()
    await connect.put(connector, connector_config(connector))
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    decoder = DebeziumDecoder()
    seen = asyncio.Event()
    count = 0

    async def tail() -> None:
        nonlocal count
        async for m in consumer:
            change = decoder.decode(m.key, m.value, m.topic, m.partition, m.offset)
            print(show(change), flush=True)
            count += 1
            seen.set()

    try:
        await connect.wait_running(connector.name)
        await consumer.start()
        print(f"demo-cdc: connector {connector.name} streams {TABLE} to topic {topic}")
        print("the initial snapshot:")
        reader = asyncio.create_task(tail())
        while count < 3:
            seen.clear()
            await asyncio.wait_for(seen.wait(), 60)
        for label, sql in CHANGES:
            await asyncio.sleep(1.5)
            print(f"{label}: {sql}")
            before = count
            await db.execute(sql)
            while count == before:
                seen.clear()
                await asyncio.wait_for(seen.wait(), 30)
        await asyncio.sleep(1.5)
        if follow:
            print(
                f"following: change {TABLE} in postgresql://sync:sync@127.0.0.1:"
                f"{os.environ.get('CDC_PG_PORT', '55440')}/sync (Ctrl-C stops)"
            )
            await reader
        reader.cancel()
    finally:
        await consumer.stop()
        await connect.delete(connector.name)
        await connect.close()
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--follow", action="store_true", help="keep printing changes")
    args = parser.parse_args()
    # The consumer may ask for the topic before the connector has created it: not news here.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    try:
        asyncio.run(main(args.follow))
    except KeyboardInterrupt:
        sys.exit(130)
