"""What the scenarios of one run share: the profile, a work folder, the receiver, the topics
to delete afterwards, the profiler; and how a scenario gets its service process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.events import create_topics
from bench.profiler import Profiler
from bench.receiver import ReceiverProcess
from bench.service import ServiceProcess, resources
from bench.settings import Profile
from bench.tree import ServiceTree


@dataclass(frozen=True, slots=True)
class DestinationSpec:
    type: str
    configuration: dict[str, Any]


@dataclass(slots=True)
class Bench:
    profile: Profile
    run_id: str
    workdir: Path
    receiver: ReceiverProcess
    profiler: Profiler
    tree: ServiceTree
    topics: list[str] = field(default_factory=list)

    async def topic(self, label: str, partitions: int = 1) -> str:
        """A new, empty events topic (by default one partition: every event has the same
        key)."""
        name = f"bench-{self.run_id}-{label}"
        await create_topics([name], partitions)
        self.topics.append(name)
        return name

    def sqlite_url(self, label: str) -> str:
        return f"sqlite:///{self.workdir / label}.db"

    def blackhole(self) -> DestinationSpec:
        return DestinationSpec("blackhole", {"batchSize": self.profile.batch_size})

    def webhook(self, **extra: Any) -> DestinationSpec:
        config = {"url": self.receiver.url, "batchSize": self.profile.batch_size, **extra}
        return DestinationSpec("webhook", config)

    @staticmethod
    def postgres(dsn: str) -> DestinationSpec:
        config = {"dsn": dsn, "table": "bench_target", "keyColumn": "id", "createTable": True}
        return DestinationSpec("postgres", config)

    @contextlib.asynccontextmanager
    async def service(
        self,
        name: str,
        *,
        topic: str,
        database_url: str,
        destination: DestinationSpec,
        extra_env: dict[str, str] | None = None,
        group: str | None = None,
    ) -> AsyncIterator[ServiceProcess]:
        """A started service consuming `topic` with a consumer group of its own (or `group`,
        shared with other processes)."""
        service = ServiceProcess(
            name,
            self.workdir,
            topic=topic,
            group=group or f"{topic}-{name}",
            database_url=database_url,
            resources=resources(
                destination.type, destination.configuration, self.profile.linger_ms
            ),
            fetch_max_records=self.profile.fetch_max_records,
            extra_env={**self.tree.env, **(extra_env or {})},
        )
        self.topics.extend(service.topics)
        try:
            await service.start()
            yield service
        finally:
            await self.profiler.detach()
            await service.stop()
