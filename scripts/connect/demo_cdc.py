"""`make demo-cdc`: a Debezium PostgreSQL connector streams a table's changes to Kafka, the
service (in this process) feeds two models over that table to a webhook receiver, and this
changes rows in the table and prints what the receiver gets, with its delay from the change.
Needs scripts/connect/cdc.sh up (scripts/demo-cdc.sh runs it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import yaml
from aiohttp import web

from service.app import build_app
from service.config import Settings
from service.resources import parse_resources
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


RECEIVER_PORT = int(os.environ.get("DEMO_RECEIVER_PORT", "8098"))


def resources(topic: str, receiver: str) -> dict[str, Any]:
    """One Debezium source; two models over its table: the customers, and their billing."""

    def sync(id: str, columns: tuple[str, ...]) -> dict[str, Any]:
        return {
            "id": id,
            "slug": f"demo-{id}",
            "modelId": id,
            "destinationId": "1",
            "schedule": {"type": "continuous", "schedule": {"lingerMs": 20}},
            "configuration": {
                "mode": "mirror",
                "mappings": [{"from": c, "to": c} for c in columns],
            },
        }

    return {
        "sources": [
            {
                "id": "1",
                "name": "customers table",
                "slug": "pg-customers",
                "type": "kafka",
                "configuration": {"topic": topic, "format": "debezium"},
            }
        ],
        "models": [
            {**model, "sourceId": "1"}
            for model in (
                {"id": "1", "name": "customers", "slug": "customers", "primaryKey": "id"},
                {"id": "2", "name": "billing", "slug": "billing", "primaryKey": "id"},
            )
        ],
        "destinations": [
            {
                "id": "1",
                "name": "receiver",
                "slug": "receiver",
                "type": "webhook",
                "configuration": {"url": receiver},
            }
        ],
        "syncs": [
            sync("1", ("id", "name", "plan", "signed_up", "traits")),
            sync("2", ("id", "mrr", "plan")),
        ],
    }


class Receiver:
    """Prints each row it gets, with the time since the last change was made."""

    def __init__(self) -> None:
        self.rows = 0
        self.changed_at = time.monotonic()
        self.got = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        ms = (time.monotonic() - self.changed_at) * 1000
        name = {"1": "customers", "2": "billing"}.get(body["syncId"], body["syncId"])
        for row in body["rows"]:
            data = orjson.dumps(row["data"]).decode()
            print(f"  receiver <- {name:<9} {row['op']:<8} key={row['key']:<3} {data}", flush=True)
        print(f"  ({ms:.0f} ms after the change)", flush=True)
        self.rows += len(body["rows"])
        self.got.set()
        return web.json_response({})

    async def wait(self, rows: int, within: float = 30) -> None:
        while self.rows < rows:
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), within)


async def main(follow: bool) -> None:
    db = await asyncpg.connect(pg_dsn())
    await db.execute(SETUP)
    run = uuid.uuid4().hex[:6]
    connector = Connector(f"demo-cdc-{run}", f"demo{run}", (TABLE,))
    topic = connector.topic(TABLE)
    connect = ConnectClient()
    await connect.put(connector, connector_config(connector))
    receiver = Receiver()
    hooks = web.Application()
    hooks.router.add_post("/hook", receiver.hook)
    hook_runner = web.AppRunner(hooks, access_log=None)
    await hook_runner.setup()
    await web.TCPSite(hook_runner, "127.0.0.1", RECEIVER_PORT).start()
    state = Path(tempfile.mkdtemp(prefix="sync-service-demo-cdc."))
    config = state / "resources.yaml"
    config.write_text(yaml.safe_dump(resources(topic, f"http://127.0.0.1:{RECEIVER_PORT}/hook")))
    settings = Settings(
        database_url=f"sqlite:///{state / 'store.db'}",
        config_file=config,
        events_topics=[f"demo-cdc-events-{run}"],
        consumer_group=f"demo-cdc-{run}",
        kafka_bootstrap_servers=os.environ.get(
            "KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
        ),
        http_host="127.0.0.1",
        http_port=int(os.environ.get("SYNC_HTTP_PORT", "8081")),
        # The receiver listens on loopback, which destinations may not reach by default.
        egress_allow=["127.0.0.1/32"],
    )
    service = web.AppRunner(
        build_app(settings, parse_resources(config)), handle_signals=False, access_log=None
    )
    try:
        await connect.wait_running(connector.name)
        await service.setup()
        await web.TCPSite(service, settings.http_host, settings.http_port).start()
        print(f"demo-cdc: connector {connector.name} streams {TABLE} to topic {topic};")
        print(f"the service feeds models customers and billing to a receiver on :{RECEIVER_PORT}")
        print("the initial snapshot:")
        await receiver.wait(6, within=90)
        for label, sql in CHANGES:
            await asyncio.sleep(1.5)
            print(f"{label}: {sql}")
            before = receiver.rows
            receiver.changed_at = time.monotonic()
            await db.execute(sql)
            await receiver.wait(before + 1)
        await asyncio.sleep(1.5)
        if follow:
            print(
                f"following: change {TABLE} in postgresql://sync:sync@127.0.0.1:"
                f"{os.environ.get('CDC_PG_PORT', '55440')}/sync (Ctrl-C stops)"
            )
            await asyncio.Event().wait()
    finally:
        await service.cleanup()
        await hook_runner.cleanup()
        await connect.delete(connector.name)
        await connect.close()
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--follow", action="store_true", help="keep printing changes")
    args = parser.parse_args()
    # The consumer may ask for the topic before the connector has created it: not news here.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        asyncio.run(main(args.follow))
    except KeyboardInterrupt:
        sys.exit(130)
