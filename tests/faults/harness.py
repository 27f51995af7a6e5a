"""The fault suite's parts: own broker and database, service processes, the model and its mirror."""

from __future__ import annotations

import asyncio
import bisect
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata

from tests.e2e.conftest import ServiceProcess, free_port
from tests.support import Receiver

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = ROOT / ".cache" / "faults" / "summary.txt"

#: Figures measured by the suite, printed at the end of the run and written to SUMMARY.
FIGURES: list[str] = []


def figure(line: str) -> None:
    FIGURES.append(line)
    print(f"[faults] {line}", flush=True)


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


class Script:
    """scripts/kafka/kafka.sh or scripts/postgres.sh for the suite's own server."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = {**os.environ, **env}

    async def __call__(self, verb: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            str(self.path),
            verb,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"{self.path.name} {verb} failed:\n{out.decode(errors='replace')}")


@dataclass
class Servers:
    """The suite's own broker and PostgreSQL: these, and only these, are killed."""

    kafka: str
    postgres_url: str
    kafka_script: Script
    postgres_script: Script

    async def kill_kafka(self) -> None:
        await self.kafka_script("kill")

    async def start_kafka(self) -> None:
        await self.kafka_script("start")

    async def kill_postgres(self) -> None:
        await self.postgres_script("kill")

    async def start_postgres(self) -> None:
        await self.postgres_script("start")


class Service(ServiceProcess):
    """A `sync-service serve` process that can be killed and whose readiness is timed."""

    ready_at: float = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 60.0) -> None:
        await super().start(timeout)
        self.ready_at = time.monotonic()

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a pod is OOM-killed or a node dies."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def readyz(self) -> int:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(f"{self.base}/readyz") as r,
            ):
                return r.status
        except (aiohttp.ClientError, TimeoutError):
            return 0

    async def api(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                f"{self.base}/api/v1{path}",
                json=body,
                params=query or None,
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r,
        ):
            assert r.status < 300, f"{method} {path}: {r.status} {await r.text()}"
            return await r.json()

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


TOKEN = "faults-token"


class TimedReceiver(Receiver):
    """A webhook receiver that notes when each request arrived and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        #: None: accept; an int: answer that status; "timeout": answer after `slow` seconds.
        self.fault: int | str | None = None
        self.slow = 3.0

    async def _hook(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        if self.fault == "timeout":
            await asyncio.sleep(self.slow)
            self.changed.set()
            # The service gave up by now; like a real endpoint, the rows were applied anyway.
            return await super()._hook(request)
        if isinstance(self.fault, int):
            await request.read()
            return web.json_response({"message": "fault"}, status=self.fault)
        return await super()._hook(request)

    def first_request_after(self, moment: float) -> float | None:
        i = bisect.bisect_left(self.times, moment)
        return self.times[i] if i < len(self.times) else None


class Model:
    """What the destination must hold: key -> mapped row, after every event produced so far."""

    def __init__(self) -> None:
        self.state: dict[str, dict[str, Any]] = {}

    def apply(self, op: str, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key = str(row["id"])
            if op == "delete":
                self.state.pop(key, None)
            else:
                self.state[key] = {"id": row["id"], "v": row.get("v")}


@dataclass
class Diff:
    missing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    not_deleted: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.stale or self.not_deleted)

    def __str__(self) -> str:
        return (
            f"{len(self.missing)} missing {self.missing[:5]}, {len(self.stale)} stale "
            f"{self.stale[:5]}, {len(self.not_deleted)} not deleted {self.not_deleted[:5]}"
        )


class Mirror:
    """The destination's state, rebuilt from the rows the receiver accepted, in arrival order."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.state: dict[str, dict[str, Any]] = {}
        self.received = 0
        #: Rows that changed nothing: the same data again, or a removal of an absent key.
        self.redundant = 0

    def catch_up(self) -> None:
        rows = self.receiver.rows
        for row in rows[self.received :]:
            key, data = row["key"], row.get("data")
            if row["op"] == "removed":
                if key not in self.state:
                    self.redundant += 1
                self.state.pop(key, None)
            else:
                if self.state.get(key) == data:
                    self.redundant += 1
                self.state[key] = data
        self.received = len(rows)

    def diff(self, model: Model, extra: Callable[[Any], bool] | None = None) -> Diff:
        """`extra(data)` true: a row the model does not describe, whose presence is checked
        elsewhere (a poison case that may be delivered)."""
        self.catch_up()
        d = Diff()
        for key, want in model.state.items():
            have = self.state.get(key)
            if have is None:
                d.missing.append(key)
            elif have != want:
                d.stale.append(key)
        d.not_deleted = [
            k
            for k, data in self.state.items()
            if k not in model.state and not (extra is not None and extra(data))
        ]
        return d

    async def converge(
        self,
        model: Model,
        timeout: float,
        what: str = "convergence",
        extra: Callable[[Any], bool] | None = None,
    ) -> float:
        """Seconds until the destination equals the model, key by key; fails after timeout."""
        start = time.monotonic()
        while True:
            d = self.diff(model, extra)
            if d.clean:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"no {what} within {timeout:.0f}s: {d}")
            await asyncio.sleep(0.1)

    def duplicates(self) -> str:
        held = max(len(self.state), 1)
        useful = max(self.received - self.redundant, 1)
        return (
            f"rows received {self.received}, held {len(self.state)}: received/held "
            f"{self.received / held:.2f}; redundant rows {self.redundant} "
            f"(received/useful {self.received / useful:.3f})"
        )


def resources(receiver_url: str, **destination: Any) -> dict[str, Any]:
    return {
        "models": [{"id": "1", "name": "items", "slug": "items", "primaryKey": "id"}],
        "destinations": [
            {
                "id": "1",
                "name": "hook",
                "slug": "hook",
                "type": "webhook",
                "configuration": {"url": receiver_url, "batchSize": 200, **destination},
            }
        ],
        "syncs": [
            {
                "id": "1",
                "slug": "items-to-hook",
                "modelId": "1",
                "destinationId": "1",
                "schedule": {"type": "continuous", "schedule": {"lingerMs": 50}},
                "configuration": {
                    "mode": "mirror",
                    "mappings": [{"from": "id", "to": "id"}, {"from": "v", "to": "v"}],
                },
            }
        ],
    }


class Cluster:
    """Service processes of one test on the suite's servers, with their topics and store."""

    def __init__(
        self, tmp_path: Path, servers: Servers, uid: str, database_url: str | None = None
    ) -> None:
        import yaml

        self.tmp_path = tmp_path
        self.servers = servers
        self.events_topic = f"faults-events-{uid}"
        self.dlq_topic = f"faults-dlq-{uid}"
        self.config_file = tmp_path / "resources.yaml"
        self._yaml = yaml
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
            "SYNC_KAFKA_BOOTSTRAP_SERVERS": servers.kafka,
            "SYNC_EVENTS_TOPICS": self.events_topic,
            "SYNC_STATUS_TOPIC": f"faults-status-{uid}",
            "SYNC_DLQ_TOPIC": self.dlq_topic,
            "SYNC_CONSUMER_GROUP": f"faults-{uid}",
            "SYNC_DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'store.db'}",
            "SYNC_CONFIG_FILE": str(self.config_file),
            "SYNC_API_TOKENS": f"{TOKEN}=1",
            "SYNC_EGRESS_ALLOW": "127.0.0.1/32",  # the receivers listen on loopback
            "SYNC_FAILED_ROWS_RETRY_SECONDS": "1",
            "SYNC_DESTINATION_RETRY_BASE_SECONDS": "0.1",
            "SYNC_DESTINATION_RETRY_MAX_SECONDS": "2",
            "SYNC_KAFKA_CONNECT_TIMEOUT_SECONDS": "120",
            "SYNC_LOG_LEVEL": "INFO",
        }
        self.services: list[Service] = []
        self.producer: AIOKafkaProducer | None = None
        self.model = Model()

    def write_resources(self, data: dict[str, Any]) -> None:
        self.config_file.write_text(self._yaml.safe_dump(data))

    async def service(self, name: str = "service", **env: str) -> Service:
        """Start one more process (a restart when the last one was killed) and wait for /readyz."""
        # The config takes a fixed port (SYNC_HTTP_PORT must be 1-65535), so a free one is picked.
        merged = {**self.env, "SYNC_HTTP_PORT": str(free_port()), **env}
        service = Service(merged, self.tmp_path / f"{name}.log")
        self.services.append(service)
        await service.start()
        return service

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.servers.kafka,
                acks="all",
                max_request_size=4 << 20,
                request_timeout_ms=10_000,
            )
            await self.producer.start()
        return self.producer

    async def produce(self, value: bytes | dict[str, Any], key: bytes = b"1") -> RecordMetadata:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        producer = await self._producer()
        return await producer.send_and_wait(self.events_topic, raw, key=key)

    async def event(
        self, op: str, rows: list[dict[str, Any]], key: bytes = b"1", **extra: Any
    ) -> None:
        """Produce a valid event; the model follows once the broker acknowledged it."""
        await self.produce({"modelId": "1", "op": op, "rows": rows, **extra}, key=key)
        self.model.apply(op, rows)

    async def close(self) -> None:
        for service in self.services:
            await service.kill()
        if self.producer is not None:
            await self.producer.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.log_path.name}\n{s.log()}" for s in self.services[-2:])


class Load:
    """Upserts and deletes over a fixed set of keys. Events are keyed by the model id (the service
    requires it), so every key's changes stay in order on one partition."""

    def __init__(self, cluster: Cluster, keys: int, rng: random.Random) -> None:
        self.cluster = cluster
        self.keys = keys
        self.rng = rng
        self.version = 0
        self.events = 0

    async def step(self, rows: int = 15) -> None:
        self.version += 1
        keys = {self.rng.randrange(self.keys) for _ in range(rows)}
        if self.rng.random() < 0.2:
            await self.cluster.event("delete", [{"id": k} for k in keys])
        else:
            await self.cluster.event(
                "upsert", [{"id": k, "v": f"v{self.version}-{k}"} for k in keys]
            )
        self.events += 1

    async def run(self, rate: float, stop: Callable[[], bool]) -> None:
        """About `rate` events a second until `stop()`."""
        interval = 1.0 / rate
        next_at = time.monotonic()
        while not stop():
            await self.step()
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
