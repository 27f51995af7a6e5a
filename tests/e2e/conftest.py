"""The service as users run it: `sync-service serve` in its own process, on a real broker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Receiver

SYNC_SERVICE = str(Path(sys.executable).parent / "sync-service")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resources(receiver_url: str, mode: str = "mirror", **destination: Any) -> dict[str, Any]:
    return {
        "models": [{"id": "1", "name": "users", "slug": "users", "primaryKey": "id"}],
        "destinations": [
            {
                "id": "1",
                "name": "crm",
                "slug": "crm",
                "type": "webhook",
                "configuration": {"url": receiver_url, **destination},
            }
        ],
        "syncs": [
            {
                "id": "1",
                "slug": "users-to-crm",
                "modelId": "1",
                "destinationId": "1",
                "schedule": {"type": "continuous", "schedule": {"lingerMs": 50}},
                "configuration": {
                    "mode": mode,
                    "mappings": [
                        {"from": "id", "to": "id"},
                        {"from": "email", "to": "email_address"},
                        {"type": "template", "to": "name", "template": "{{ first }} {{ last }}"},
                    ],
                },
            }
        ],
    }


class ServiceProcess:
    """One `sync-service serve` process; its log goes to a file shown when a test fails."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = int(env["SYNC_HTTP_PORT"])  # 0 until the server says which it bound
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout: float = 40.0) -> None:
        """Start and wait for /readyz. With SYNC_HTTP_PORT=0 the server takes a free port and
        names it in its log, where it is read from (no port picked here and handed on)."""
        log = self.log_path.open("ab")
        since = log.tell()
        self.proc = await asyncio.create_subprocess_exec(
            SYNC_SERVICE, "serve", env=self.env, stdout=log, stderr=log
        )
        log.close()
        if self.env["SYNC_HTTP_PORT"] == "0":
            self.port = 0
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"service exited {self.proc.returncode}:\n{self.log()}")
                if not self.port:
                    self.port = self._bound_port(since)
                if self.port and await self._ready(session):
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"service not ready in {timeout}s:\n{self.log()}")
                await asyncio.sleep(0.2)

    def _bound_port(self, since: int) -> int:
        """The port this start's server bound, from its "HTTP on host:port" log line; 0 before."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            found = re.findall(rb"HTTP on \S+:(\d+)", log.read())
        return int(found[-1]) if found else 0

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.base}/readyz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise AssertionError(f"no exit within {timeout}s of signal {sig}") from None
        assert self.proc.returncode is not None
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    async def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.base}/metrics") as r:
            text = await r.text()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and (labels or {}).items() <= sample.labels.items():
                    total += sample.value
        return total


class Harness:
    def __init__(self, tmp_path: Path, kafka: str, uid: str, receiver: Receiver) -> None:
        self.tmp_path = tmp_path
        self.kafka = kafka
        self.receiver = receiver
        self.events_topic = f"events-{uid}"
        self.status_topic = f"status-{uid}"
        self.dlq_topic = f"dlq-{uid}"
        self.config_file = tmp_path / "resources.yaml"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
            "SYNC_KAFKA_BOOTSTRAP_SERVERS": kafka,
            "SYNC_EVENTS_TOPICS": self.events_topic,
            "SYNC_STATUS_TOPIC": self.status_topic,
            "SYNC_DLQ_TOPIC": self.dlq_topic,
            "SYNC_CONSUMER_GROUP": f"group-{uid}",
            "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'store.db'}",
            "SYNC_HTTP_PORT": "0",  # the server picks; ServiceProcess reads it from the log
            "SYNC_CONFIG_FILE": str(self.config_file),
            "SYNC_FAILED_ROWS_RETRY_SECONDS": "0.5",
            "SYNC_DESTINATION_RETRY_BASE_SECONDS": "0.05",
            "SYNC_LOG_LEVEL": "INFO",
            "SYNC_EGRESS_ALLOW": "127.0.0.1/32",  # receivers and PostgreSQL on loopback
        }
        self.services: list[ServiceProcess] = []
        self.producer: AIOKafkaProducer | None = None

    def write_resources(self, data: dict[str, Any]) -> None:
        self.config_file.write_text(yaml.safe_dump(data))

    async def service(self) -> ServiceProcess:
        service = ServiceProcess(self.env, self.tmp_path / "service.log")
        self.services.append(service)
        await service.start()
        return service

    async def produce(self, value: bytes | dict[str, Any], key: bytes | None = b"1") -> None:
        if self.producer is None:
            self.producer = AIOKafkaProducer(bootstrap_servers=self.kafka, acks="all")
            await self.producer.start()
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        await self.producer.send_and_wait(self.events_topic, raw, key=key)

    async def event(self, op: str, rows: list[dict[str, Any]], **extra: Any) -> None:
        await self.produce({"modelId": "1", "op": op, "rows": rows, **extra})

    async def close(self) -> None:
        for service in self.services:
            if service.proc is not None and service.proc.returncode is None:
                service.proc.kill()
                await service.proc.wait()
        if self.producer is not None:
            await self.producer.stop()


@pytest.fixture
async def e2e(
    tmp_path: Path, kafka_bootstrap: str, uid: str, receiver: Receiver
) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, kafka_bootstrap, uid, receiver)
    harness.write_resources(resources(receiver.url))
    yield harness
    await harness.close()
