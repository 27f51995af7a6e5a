"""Change data capture for tests: the PostgreSQL server with logical replication and the Kafka
Connect worker of scripts/connect/cdc.sh, and Debezium connectors added through Connect's REST
API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
CDC_SCRIPT = ROOT / "scripts" / "connect" / "cdc.sh"


def pg_port() -> int:
    return int(os.environ.get("CDC_PG_PORT", "55440"))


def pg_dsn() -> str:
    return f"postgresql://sync:sync@127.0.0.1:{pg_port()}/sync"


def connect_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('CONNECT_PORT', '18083')}"


def start_cdc() -> float:
    """Starts (or finds running) PostgreSQL with logical replication and the Connect worker;
    returns the seconds it took. Blocking: call it outside the event loop."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(CDC_SCRIPT), "up"], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/connect/cdc.sh up failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


@dataclass(frozen=True)
class Connector:
    """One Debezium PostgreSQL connector: its topics are `<prefix>.<schema>.<table>`."""

    name: str
    prefix: str
    tables: tuple[str, ...]

    def topic(self, table: str) -> str:
        return f"{self.prefix}.{table if '.' in table else 'public.' + table}"


def connector_config(
    connector: Connector, *, schemas: bool = True, **overrides: str
) -> dict[str, str]:
    """The connector as the tests run it: pgoutput, a slot and a publication of its own that go
    when it is deleted, truncates not skipped."""
    slot = connector.name.replace("-", "_").lower()
    config = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": "127.0.0.1",
        "database.port": str(pg_port()),
        "database.user": "sync",
        "database.password": "sync",
        "database.dbname": "sync",
        "topic.prefix": connector.prefix,
        "table.include.list": ",".join(t if "." in t else f"public.{t}" for t in connector.tables),
        "slot.name": slot,
        "slot.drop.on.stop": "true",
        "publication.name": f"{slot}_pub",
        "publication.autocreate.mode": "filtered",
        "skipped.operations": "none",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": str(schemas).lower(),
        "value.converter.schemas.enable": str(schemas).lower(),
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
        "poll.interval.ms": "100",
        "status.update.interval.ms": "1000",
    }
    config.update(overrides)
    return config


class ConnectClient:
    """Connect's REST API: add, wait for, and remove connectors."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or connect_url()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self._http.close()

    async def put(self, connector: Connector, config: dict[str, str]) -> None:
        async with self._http.put(
            f"{self.url}/connectors/{connector.name}/config", json=config
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"PUT connector {connector.name}: {await resp.text()}")

    async def status(self, name: str) -> dict[str, Any] | None:
        async with self._http.get(f"{self.url}/connectors/{name}/status") as resp:
            if resp.status == 404:
                return None
            return await resp.json()

    async def wait_running(self, name: str, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        last: dict[str, Any] | None = None
        while asyncio.get_running_loop().time() < deadline:
            last = await self.status(name)
            if last is not None:
                tasks = last.get("tasks") or []
                if any(t.get("state") == "FAILED" for t in tasks):
                    raise RuntimeError(f"connector {name} failed: {tasks}")
                if tasks and all(t.get("state") == "RUNNING" for t in tasks):
                    return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"connector {name} not running after {timeout}s: {last}")

    async def stop(self, name: str) -> None:
        """Stops the connector and its tasks (Connect's STOPPED state); `resume` starts it."""
        await self._state(name, "stop")

    async def resume(self, name: str) -> None:
        await self._state(name, "resume")

    async def _state(self, name: str, action: str) -> None:
        async with self._http.put(
            f"{self.url}/connectors/{name}/{action}", headers={"Content-Type": "application/json"}
        ) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"{action} connector {name}: {await resp.text()}")

    async def wait_stopped(self, name: str, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            status = await self.status(name)
            if status is not None and status["connector"]["state"] == "STOPPED":
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"connector {name} not stopped after {timeout}s")

    async def delete(self, name: str) -> None:
        async with self._http.delete(f"{self.url}/connectors/{name}") as resp:
            if resp.status not in (204, 404):
                raise RuntimeError(f"DELETE connector {name}: {await resp.text()}")


@dataclass(frozen=True)
class RawRecord:
    """A record as Kafka carried it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


async def read_topics(
    bootstrap: str,
    topics: Sequence[str],
    until: Callable[[list[RawRecord]], bool],
    timeout: float = 60,
) -> list[RawRecord]:
    """Reads every partition of `topics` from the start until `until(records)` holds; raises
    on timeout. Waits for the topics to exist without creating them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    records: list[RawRecord] = []
    try:
        while True:
            metadata = await consumer._client.fetch_all_metadata()
            if set(topics) <= metadata.topics():
                break
            if loop.time() > deadline:
                raise TimeoutError(f"topics {list(topics)} not created in {timeout}s")
            await asyncio.sleep(0.3)
        partitions = [
            TopicPartition(t, p) for t in topics for p in metadata.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while not until(records):
            if loop.time() > deadline:
                raise TimeoutError(f"{len(records)} records read from {list(topics)} so far")
            batches = await consumer.getmany(timeout_ms=300)
            for tp, msgs in batches.items():
                records.extend(
                    RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value) for m in msgs
                )
        return records
    finally:
        await consumer.stop()
