"""The store interface. Every method is one transaction; none blocks the event loop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from service.core.models import Destination, Model, Source, Sync, SyncRun, SyncStatus
from service.core.rows import (
    PendingRow,
    PendingWrite,
    RejectedRow,
    RowOutcomes,
    SnapshotProgress,
    SyncedRow,
)

CatalogItem = Model | Destination | Sync | Source
T = TypeVar("T", Model, Destination, Sync, Source)

#: The data a run's page of pending rows holds at most (`Store.pending_page`): with the rows of
#: the page read ahead, a run over wide rows keeps a few times this in memory, not thousands of
#: rows' worth.
MAX_PAGE_BYTES = 4 << 20

#: Table of each catalog kind.
TABLES: dict[type[CatalogItem], str] = {
    Source: "sources",
    Model: "models",
    Destination: "destinations",
    Sync: "syncs",
}


class Conflict(Exception):
    """A write that would break a rule of the catalog: a slug used twice in a workspace, or
    deleting something another resource still refers to. `field` names what is at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StoreUnavailable(Exception):
    """The store cannot be used: another process holds the SQLite file, or no connection
    could be had in time. The message is one line for the operator."""


class LeaseLost(Exception):
    """A run's write refused because its sync's lease now belongs to another holder (another
    owner or a later token): the run must end without writing more."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A held sync lease: who holds it and the fencing token of this acquisition."""

    sync_id: str
    owner: str
    token: int


@dataclass(frozen=True, slots=True)
class RunControl:
    """A trigger asked for through the store, for the replica that runs the sync."""

    sync_id: str
    run_id: str | None
    full_resync: bool


@dataclass(frozen=True, slots=True)
class Retention:
    """What `Store.prune` keeps."""

    runs_seconds: float = 30 * 86400
    runs_per_sync: int = 10_000
    rejected_seconds: float = 7 * 86400
    #: A snapshot still open after this long forgets its keys and counts as closed.
    open_snapshot_seconds: float = 7 * 86400
    #: A closed snapshot is remembered this long, so its closing message read again is ignored.
    closed_snapshot_seconds: float = 30 * 86400
    #: Run requests nobody took.
    requests_seconds: float = 86400


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs of one sync to list; newest first unless `ascending`."""

    sync_id: str
    run_id: str | None = None
    after: datetime | None = None  # createdAt strictly after
    before: datetime | None = None  # createdAt strictly before
    limit: int = 5
    offset: int = 0
    order_by: str = "createdAt"  # createdAt | startedAt | finishedAt | id
    ascending: bool = False
    #: Only runs of a sync of this workspace.
    workspace_id: str | None = None


class Store(ABC):
    """Durable state shared by the pipeline stages and the API.

    Delivery guarantee: `write_pending` commits before the caller commits Kafka offsets;
    `record_outcomes` removes a pending row only if its `seq` is still the one that was sent,
    in the same transaction that records the row as synced.
    """

    #: Whether other processes may write the store at the same time (several replicas).
    shared: bool = False

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
    async def upsert(self, item: CatalogItem) -> None:
        """Insert or replace by id. A sync's status and lastRunAt survive a replace (they are
        the runs' to write), except that disabling shows `disabled` and enabling `pending`.
        Raises Conflict("slug", ...) when another item of the workspace has the slug."""

    @abstractmethod
    async def create(self, item: T) -> T:
        """Insert with the next free numeric id (the item's own id is ignored); returns the
        stored item. Raises Conflict("slug", ...) like `upsert`."""

    @abstractmethod
    async def get(self, kind: type[T], item_id: str, workspace_id: str | None = None) -> T | None:
        """The item, or None when it does not exist or belongs to another workspace."""

    @abstractmethod
    async def list(self, kind: type[T], workspace_id: str | None = None) -> list[T]:
        """Every item of that kind (of one workspace), by numeric id."""

    @abstractmethod
    async def list_page(
        self,
        kind: type[T],
        workspace_id: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        filters: dict[str, str] | None = None,
        order_by: str = "id",
        last_run_after: datetime | None = None,
        last_run_before: datetime | None = None,
    ) -> tuple[list[T], bool]:
        """Items in `order_by` order (`id`, `name`, `slug`, `createdAt`, `updatedAt`, and for
        syncs `lastRunAt`; ties by numeric id), a page of them with `limit`, and whether more
        follow; paged and filtered in the database. `filters` match exactly (`slug`, `name`,
        `model_id`, `destination_id`, `source_id`); `last_run_after`/`last_run_before` keep
        syncs whose last run is strictly inside. An item whose stored document cannot be read
        is left out (logged, counted in `unreadable()`, a sync marked failed), never failing
        the list."""

    def unreadable(self) -> int:
        """How many catalog items were found unreadable by reads so far and not since read
        well or deleted."""
        return 0

    async def users_of(
        self, kind: type[CatalogItem], workspace_id: str, ids: Sequence[str]
    ) -> dict[str, list[str]]:
        """Per model (or destination) id among `ids`: the ids of the workspace's syncs that
        use it, by numeric id."""
        column = "model_id" if kind is Model else "destination_id"
        found: dict[str, list[str]] = {}
        for sync in await self.list(Sync, workspace_id):
            used = getattr(sync, column)
            if used in ids:
                found.setdefault(used, []).append(sync.id)
        return found

    @abstractmethod
    async def delete(self, kind: type[CatalogItem], item_id: str, workspace_id: str) -> bool:
        """False when there was no such item. Raises Conflict when a sync still uses the model
        or destination, or a model the source. Deleting a sync drops its rows and runs."""

    @abstractmethod
    async def set_sync_status(
        self, sync_id: str, status: SyncStatus, last_run_at: datetime | None = None
    ) -> None: ...

    async def get_model(self, model_id: str) -> Model | None:
        return await self.get(Model, model_id)

    async def get_destination(self, destination_id: str) -> Destination | None:
        return await self.get(Destination, destination_id)

    async def get_sync(self, sync_id: str) -> Sync | None:
        return await self.get(Sync, sync_id)

    async def list_models(self) -> list[Model]:
        return await self.list(Model)

    async def list_destinations(self) -> list[Destination]:
        return await self.list(Destination)

    async def list_sources(self) -> list[Source]:
        return await self.list(Source)

    async def list_syncs(self) -> list[Sync]:
        return await self.list(Sync)

    # rows ------------------------------------------------------------------------------

    @abstractmethod
    async def write_pending(
        self, rows: Sequence[PendingWrite], snapshot: SnapshotProgress | None = None
    ) -> int:
        """Keep `rows` as the newest pending version of each (sync, key); one transaction.
        Each row gets a `seq` greater than any before it. A row the destination already holds
        (an upsert whose hash is the synced one, a delete of a key never synced) is left out
        unless an older version of it is pending, so unchanged rows cost no write. With
        `snapshot`, also remember the keys seen in open snapshots, then close the snapshots
        named: every key synced or pending for that sync but absent from the snapshot becomes
        a pending delete. The snapshot's `rejected` rows are stored too. Returns how many of
        `rows` were kept."""

    @abstractmethod
    async def claim_rejected(self, sync_id: str, run_id: str) -> int:
        """Mark the sync's rejected rows not yet counted by a run as this run's; how many."""

    @abstractmethod
    async def list_rejected(
        self, sync_id: str, *, limit: int, offset: int, workspace_id: str | None = None
    ) -> tuple[list[RejectedRow], bool]:
        """Rejected rows, newest first, and whether more follow (none when the sync is not
        of `workspace_id`, if given)."""

    @abstractmethod
    async def open_snapshots(self) -> list[tuple[str, str, float]]:
        """(sync_id, snapshotId, first seen as epoch seconds) of snapshots not yet closed."""

    @abstractmethod
    async def pending_counts(self) -> dict[str, int]:
        """Pending rows per sync id, for syncs that have any."""

    @abstractmethod
    async def failed_counts(self) -> dict[str, int]:
        """Pending rows that failed at least once, per sync id."""

    @abstractmethod
    async def list_pending(
        self,
        sync_id: str,
        *,
        failed_only: bool,
        limit: int,
        offset: int,
        workspace_id: str | None = None,
    ) -> tuple[list[PendingRow], bool]:
        """Pending rows by key (only those with an error, with `failed_only`), and whether
        more follow the page (none when the sync is not of `workspace_id`, if given). What a
        listing shows: no data or hash."""

    @abstractmethod
    async def requeue_synced(self, sync_id: str) -> int:
        """Full resync: every synced row not already pending becomes pending again with the
        source data last sent; returns how many."""

    @abstractmethod
    async def max_pending_seq(self, sync_id: str) -> int:
        """The highest `seq` pending for the sync, 0 when none."""

    @abstractmethod
    async def pending_page(
        self,
        sync_id: str,
        after_seq: int,
        upto_seq: int,
        limit: int,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> list[PendingRow]:
        """Pending rows with after_seq < seq <= upto_seq, in seq order, each with what the
        destination holds for its key (`synced_hash`; for deletes the source last sent): at
        most `limit`, and none after the row that brings their data to `max_bytes` (the
        first row always comes, however large)."""

    @abstractmethod
    async def synced_rows(self, sync_id: str, keys: Sequence[str]) -> dict[str, SyncedRow]:
        """What the destination holds for these keys (those it holds)."""

    @abstractmethod
    async def record_outcomes(
        self, sync_id: str, outcomes: RowOutcomes, now: float, lease: Lease | None = None
    ) -> None:
        """Delivered rows become synced (removed rows forgotten) and leave pending if their seq
        is unchanged; failed rows keep their error and one more attempt; dropped rows leave
        pending. One transaction. With `lease`, raises LeaseLost (and writes nothing) when the
        sync's lease is no longer that one."""

    # streamed rows (sent straight from ingest, written once as their outcome) -------------

    @abstractmethod
    async def held(self, sync_id: str, keys: Sequence[str]) -> dict[str, tuple[bytes | None, bool]]:
        """For each of `keys` the store knows: (the hash the destination holds, None when it
        holds none; whether a version is pending). A key left out is unknown to the store.
        One read, any number of keys; writes nothing."""

    @abstractmethod
    async def settled_page(
        self, sync_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes | None]]:
        """Up to `limit` keys of the sync after `after`, in key order, that have no pending
        version: (key, the hash the destination holds or None). Pages through what a replica
        may cache of a sync without asking key by key; one read."""

    @abstractmethod
    async def record_streamed(
        self,
        sync_id: str,
        delivered: Sequence[PendingWrite],
        failed: Sequence[tuple[PendingWrite, str | None]],
        now: float,
    ) -> list[str]:
        """Outcomes of upserts sent straight from ingest, never written as pending; one
        transaction, one statement per kind whatever the batch size. A delivered row becomes
        what the destination holds (hash and data); if its key was made pending meanwhile
        by another writer (a full resync, a snapshot's planned delete), the key stays
        pending with this version under a new `seq`, so a runner sends it again and its
        older send, recorded later, does not clear it. A failed row (with its error) becomes
        the key's pending version under a new `seq`, with one more attempt at `now`; what
        the destination holds is unchanged. A failed row may also be a removal (a delete
        whose data is the source columns it sends), or have no error (a removal the service
        stopped before sending: no attempt): it becomes the key's pending delete, and a key
        the store knows no held version of is taken as held (`MAYBE_HELD`), so a run sends the
        removal. Returns the keys this call left pending. Raises ValueError when a row is of
        another sync, a delivered row is not an upsert with data and a hash, a failed row is
        neither that nor a removal with data, or a key appears twice among `delivered` and
        `failed`."""

    @abstractmethod
    async def pending_among(self, sync_id: str, keys: Sequence[str]) -> set[str]:
        """Which of `keys` have a pending version; one read."""

    @abstractmethod
    async def syncs_with_pending(self, sync_ids: Sequence[str]) -> set[str]:
        """Which of these syncs have a pending row; one index probe per sync, no count."""

    @abstractmethod
    async def sync_epochs(self, sync_ids: Sequence[str]) -> dict[str, int]:
        """Each sync's epoch, which grows in the transaction of `write_pending` that plans
        removals of its keys (a snapshot closed, a source table truncated); a sync left out
        never had any. A replica that caches what the destination holds drops the cache of a
        sync whose epoch moved: the removals may be of keys it streams. One read."""

    # runs ------------------------------------------------------------------------------

    @abstractmethod
    async def acquire_lease(self, sync_id: str, owner: str, seconds: float) -> int | None:
        """Hold the sync for `seconds` unless another owner holds an unexpired lease: with
        several replicas on one store, a sync runs on one of them at a time. Returns the
        fencing token of this acquisition (greater than any before it for the sync), or None
        when another owner holds the lease."""

    @abstractmethod
    async def renew_lease(self, sync_id: str, owner: str, token: int, seconds: float) -> bool:
        """Extend the lease to `seconds` from now; False when it is no longer (owner, token)."""

    @abstractmethod
    async def release_lease(self, sync_id: str, owner: str, token: int | None = None) -> None:
        """Free the lease if `owner` (with `token`, that acquisition) still holds it."""

    @abstractmethod
    async def next_run_id(self) -> str: ...

    @abstractmethod
    async def save_run(self, run: SyncRun, lease: Lease | None = None) -> None:
        """Insert or replace the run record by id. A run saved with `lease` is bound to it:
        this and every later save of the run raise LeaseLost, writing nothing, once the sync's
        lease belongs to another holder."""

    @abstractmethod
    async def list_runs(self, query: RunQuery) -> tuple[list[SyncRun], bool]:
        """The runs the query selects, and whether more follow the page."""

    @abstractmethod
    async def close_orphaned_runs(self) -> list[SyncRun]:
        """Close as `interrupted` the runs left queued or processing by a holder that is gone
        (its lease expired or was taken; in SQLite, every run of an earlier process) and
        return them, so the caller can report them. Their rows stay pending."""

    # run control -----------------------------------------------------------------------

    @abstractmethod
    async def request_run(self, sync_id: str, run_id: str | None, full_resync: bool) -> None:
        """Ask whichever replica runs the sync to run it (as run `run_id`, already recorded
        as queued, when given)."""

    @abstractmethod
    async def take_run_requests(self, owner: str, limit: int = 100) -> list[RunControl]:
        """Take (remove and return) run requests of syncs whose lease is free, expired or
        held by `owner`, oldest first; each is taken by one replica only."""

    @abstractmethod
    async def request_cancel(self, sync_id: str, run_id: str) -> None:
        """Ask the replica running `run_id` to cancel it."""

    @abstractmethod
    async def cancel_requested(self, run_id: str) -> bool:
        """Whether a cancel of the run was asked for (forgotten once the run is saved final)."""

    # upkeep ----------------------------------------------------------------------------

    @abstractmethod
    async def prune(
        self, retention: Retention | None = None, now: float | None = None
    ) -> dict[str, int]:
        """Drop what `retention` no longer keeps; how many of each: `runs`, `rejected`,
        `snapshotKeys` (of snapshots that never closed), `snapshots` (closed long ago),
        `requests`."""
