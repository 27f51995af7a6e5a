"""The small interfaces between stages. Implementations are picked in `service.app`."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from service.core.models import Sync, SyncRun
from service.core.rows import RowChange


@dataclass(slots=True)
class Batch:
    """Row changes for one destination request; `batch_id` is unique within the run."""

    sync_id: str
    run_id: str
    batch_id: str
    rows: list[RowChange]


@dataclass(slots=True)
class BatchResult:
    """Rows of a delivered batch that the destination refused, by key, with the reason."""

    rejected: dict[str, str] = field(default_factory=dict)


class DestinationWriter(ABC):
    """Writes batches of row changes to one configured destination.

    `open` is awaited once before the first `write`, `close` once at the end. `write` makes one
    delivery attempt: it returns the rows the destination refused one by one, or raises a
    `DestinationError`; retries, batching and pacing belong to the runner around it. Writing the
    same batch twice must leave the destination as writing it once (idempotent by key).
    """

    type_name: str
    #: Most rows per `write`; the runner never sends more.
    batch_size: int = 100
    #: Ceiling of the adaptive concurrency limit (batches in flight), and rate limits.
    max_concurrency: int = 1
    max_requests_per_second: float | None = None
    max_rows_per_second: float | None = None

    async def open(self) -> None:  # noqa: B027 - most destinations have nothing to open
        """Connect; may raise `DestinationError`."""

    @abstractmethod
    async def write(self, batch: Batch) -> BatchResult: ...

    async def check(self, timeout_seconds: float = 5.0) -> None:  # noqa: B027 - nothing to check
        """Called after `open`: raises `DestinationError` when the destination cannot take
        rows now (unreachable, a table or topic missing, credentials refused), within about
        `timeout_seconds`."""

    async def close(self) -> None:  # noqa: B027
        """Release connections; must not raise."""


def _never() -> bool:
    return False


@dataclass(slots=True)
class RunRequest:
    """Why and how to run a sync. `window` > 0 keeps one run open that long, sending rows that
    keep arriving after `linger` seconds, so a continuous sync leaves few run records.
    `should_stop` ends such a window early (shutdown)."""

    reason: str
    requested_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Set when the run record already exists (a trigger answered with its id).
    run_id: str | None = None
    full_resync: bool = False
    #: Record what is pending as synced without sending it.
    reset_cdc: bool = False
    window: float = 0.0
    linger: float = 0.0
    should_stop: Callable[[], bool] = _never
    #: Set by a cancel request: the run then ends `cancelled`, not `interrupted`.
    cancelled: bool = False


class SyncExecutor(Protocol):
    """Runs a sync once, start to finish; returns the finished run record, or None when
    another replica holds the sync (its lease) and the run is theirs."""

    async def run(self, sync: Sync, request: RunRequest) -> SyncRun | None: ...


class RunControl(Protocol):
    """What the API may ask of the pipeline: start a run, or cancel one."""

    async def trigger(self, sync: Sync, *, full_resync: bool, reset_cdc: bool = False) -> str:
        """Queue a run and return its id; a trigger while one is queued joins it."""
        ...

    async def cancel(self, sync: Sync, run_id: str) -> bool:
        """Cancel a queued or running run; False when it is not queued or running."""
        ...


class RunReporter(Protocol):
    """Receives a run each time it enters a status; persists and publishes it, in order."""

    async def report(self, sync: Sync, run: SyncRun) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock; tests pass their own."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
