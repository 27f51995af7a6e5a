"""The store interface. Every method is one transaction; none blocks the event loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

from service.core.models import Destination, Model, Source, Sync, SyncRun, SyncStatus
from service.core.rows import PendingRow, PendingWrite, RowOutcomes, SyncedRow

CatalogKind = Literal["models", "destinations", "syncs", "sources"]


class Store(ABC):
    """Durable state shared by the pipeline stages and the API.

    Delivery guarantee: `write_pending` commits before the caller commits Kafka offsets;
    `record_outcomes` removes a pending row only if its `seq` is still the one that was sent,
    in the same transaction that records the row as synced.
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply schema migrations."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """True when the store answers a trivial query."""

    # catalog ---------------------------------------------------------------------------

    @abstractmethod
    async def catalog_version(self) -> int:
        """Grows on every catalog change, so readers can tell when to reload."""

    @abstractmethod
    async def upsert_model(self, model: Model) -> None: ...

    @abstractmethod
    async def upsert_destination(self, destination: Destination) -> None: ...

    @abstractmethod
    async def upsert_source(self, source: Source) -> None: ...

    @abstractmethod
    async def upsert_sync(self, sync: Sync) -> None:
        """Insert or replace the sync's definition; status and lastRunAt survive a replace."""

    @abstractmethod
    async def get_model(self, model_id: str) -> Model | None: ...

    @abstractmethod
    async def get_destination(self, destination_id: str) -> Destination | None: ...

    @abstractmethod
    async def get_sync(self, sync_id: str) -> Sync | None: ...

    @abstractmethod
    async def list_models(self) -> list[Model]: ...

    @abstractmethod
    async def list_destinations(self) -> list[Destination]: ...

    @abstractmethod
    async def list_sources(self) -> list[Source]: ...

    @abstractmethod
    async def list_syncs(self) -> list[Sync]: ...

    @abstractmethod
    async def set_sync_status(
        self, sync_id: str, status: SyncStatus, last_run_at: object | None = None
    ) -> None: ...

    # rows ------------------------------------------------------------------------------

    @abstractmethod
    async def write_pending(self, rows: Sequence[PendingWrite]) -> None:
        """Keep `rows` as the newest pending version of each (sync, key); one transaction."""

    @abstractmethod
    async def pending_counts(self) -> dict[str, int]:
        """Pending rows per sync id, for syncs that have any."""

    @abstractmethod
    async def max_pending_seq(self, sync_id: str) -> int:
        """The highest `seq` pending for the sync, 0 when none."""

    @abstractmethod
    async def pending_page(
        self, sync_id: str, after_seq: int, upto_seq: int, limit: int
    ) -> list[PendingRow]:
        """Pending rows with after_seq < seq <= upto_seq, in seq order."""

    @abstractmethod
    async def synced_rows(self, sync_id: str, keys: Sequence[str]) -> dict[str, SyncedRow]: ...

    @abstractmethod
    async def record_outcomes(self, sync_id: str, outcomes: RowOutcomes, now: float) -> None:
        """Delivered rows become synced (removed rows forgotten) and leave pending if their seq
        is unchanged; failed rows keep their error and one more attempt; dropped rows leave
        pending. One transaction."""

    # runs ------------------------------------------------------------------------------

    @abstractmethod
    async def next_run_id(self) -> str: ...

    @abstractmethod
    async def save_run(self, run: SyncRun) -> None: ...

    @abstractmethod
    async def list_runs(self, sync_id: str, limit: int = 5) -> list[SyncRun]:
        """Newest first."""
