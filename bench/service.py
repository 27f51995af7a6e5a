"""One `sync-service serve` process as users run it: its environment and resources file, its
readiness and metrics over HTTP, and its CPU time and resident memory from /proc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.events import COLUMNS
from bench.proc import cpu_seconds
from bench.settings import KAFKA, MODEL_ID, SYNC_SERVICE

POLL = 0.02  # seconds between readiness and progress polls near the moments that count

_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scrape:
    """One /metrics answer."""

    def __init__(self, text: str) -> None:
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in text.splitlines():
            if not line or line[0] == "#":
                continue
            match = _SAMPLE.match(line)
            if match:
                name, labels, value = match.groups()
                self.samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for sample, have, value in self.samples:
            if sample == name and label in have:
                out[have[label]] = out.get(have[label], 0.0) + value
        return out


def resources(destination_type: str, configuration: dict[str, Any], linger_ms: int) -> dict:
    """One model, one destination, one continuous upsert sync mapping every column."""
    mappings: list[dict[str, Any]] = [{"from": c, "to": c} for c in COLUMNS]
    return {
        "models": [{"id": MODEL_ID, "name": "users", "slug": "users", "primaryKey": "id"}],
        "destinations": [
            {
                "id": "1",
                "name": "bench",
                "slug": "bench",
                "type": destination_type,
                "configuration": configuration,
            }
        ],
        "syncs": [
            {
                "id": "1",
                "slug": "bench",
                "modelId": MODEL_ID,
                "destinationId": "1",
                "schedule": {"type": "continuous", "schedule": {"lingerMs": linger_ms}},
                "configuration": {"mode": "upsert", "mappings": mappings},
            }
        ],
    }


def tuning() -> dict[str, str]:
    """SYNC_* settings to try on every service of a run, from `BENCH_SERVICE_ENV`
    ("NAME=value NAME=value"): the rest of the environment's SYNC_* are left out."""
    pairs = os.environ.get("BENCH_SERVICE_ENV", "").split()
    found = dict(p.split("=", 1) for p in pairs if "=" in p)
    bad = [name for name in found if not name.startswith("SYNC_")]
    if bad:
        raise SystemExit(f"BENCH_SERVICE_ENV sets {', '.join(bad)}: only SYNC_* settings")
    return found


class ServiceProcess:
    """`sync-service serve` with SYNC_* settings; its log goes to `<workdir>/<name>.log`."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        *,
        topic: str,
        group: str,
        database_url: str,
        resources: dict[str, Any],
        fetch_max_records: int,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.group = group
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        config = workdir / f"{name}.yaml"
        config.write_text(yaml.safe_dump(resources))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
            "SYNC_KAFKA_BOOTSTRAP_SERVERS": KAFKA,
            "SYNC_EVENTS_TOPICS": topic,
            "SYNC_STATUS_TOPIC": f"{topic}-status",
            "SYNC_DLQ_TOPIC": f"{topic}-dlq",
            "SYNC_CONSUMER_GROUP": group,
            "SYNC_DATABASE_URL": database_url,
            "SYNC_HTTP_HOST": "127.0.0.1",
            "SYNC_HTTP_PORT": str(self.port),
            "SYNC_CONFIG_FILE": str(config),
            "SYNC_FETCH_MAX_RECORDS": str(fetch_max_records),
            "SYNC_FAILED_ROWS_RETRY_SECONDS": "1",
            "SYNC_TOPIC_PARTITIONS": "1",
            "SYNC_LOG_LEVEL": "WARNING",
            "SYNC_EGRESS_ALLOW": "127.0.0.1/32",  # receivers and PostgreSQL on loopback
            **(extra_env or {}),
            **tuning(),
        }
        self.topics = [f"{topic}-status", f"{topic}-dlq"]
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned_at = 0.0
        self._http: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def __aenter__(self) -> ServiceProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        with self.log_path.open("ab") as log:
            self.spawned_at = time.time()
            self.proc = await asyncio.create_subprocess_exec(
                str(SYNC_SERVICE), "serve", env=self.env, stdout=log, stderr=log
            )

    def check_alive(self) -> None:
        if self.proc is None or self.proc.returncode is None:
            return
        code = self.proc.returncode
        # 0 is the service's answer to SIGTERM or SIGINT, which the bench had not sent.
        why = " (stopped by a signal from another process)" if code <= 0 else ""
        raise ServiceFailed(f"{self.name} exited {code}{why}:\n{self.log_tail()}")

    async def wait_ready(self, within: float = 60.0) -> float:
        """Polls /readyz (store answers, consumer joined its group); returns when it said 200."""
        assert self._http is not None
        deadline = time.monotonic() + within
        while True:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError):
                async with self._http.get(f"{self.base}/readyz") as response:
                    if response.status == 200:
                        return time.time()
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{self.name} not ready in {within:.0f}s:\n{self.log_tail()}")
            await asyncio.sleep(POLL)

    async def scrape(self) -> Scrape:
        assert self._http is not None
        self.check_alive()
        async with self._http.get(f"{self.base}/metrics") as response:
            return Scrape(await response.text())

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads) so far."""
        return cpu_seconds(self.pid) or 0.0

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    async def stop(self, grace: float = 15.0) -> int | None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class ServiceFailed(Exception):
    """The service exited, did not get ready, or did not finish in time."""
