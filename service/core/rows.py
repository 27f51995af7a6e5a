"""Row records that travel between ingest, the store, the runner and destinations."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PendingOp = Literal["upsert", "delete"]
ChangeOp = Literal["added", "changed", "removed"]
CHANGE_OPS: tuple[ChangeOp, ...] = ("added", "changed", "removed")


#: Bytes of a row's hash (blake2b of its projected JSON): the store finds a batch's hashes by
#: their place in one blob.
ROW_HASH_BYTES = 16

#: What the destination holds of a key when a version of it may have been sent and never
#: recorded (a process stopped in between): a removal of the key is sent all the same
#: (destinations remove idempotently), and a newer version goes out as changed. No hash of
#: a row is this short.
MAYBE_HELD = b"?"


@dataclass(slots=True, frozen=True)
class SyncRoute:
    """What ingest needs to know of one enabled sync to turn an event row into a pending row."""

    sync_id: str
    primary_key: str
    referenced_columns: tuple[str, ...]


#: modelId -> the routes of its enabled syncs.
RouteIndex = Mapping[str, tuple[SyncRoute, ...]]


@dataclass(slots=True)
class PendingWrite:
    """The newest version of one row for one sync, as ingest hands it to the store."""

    sync_id: str
    key: str
    op: PendingOp
    data: bytes | None  # JSON of the row projected onto the referenced columns
    row_hash: bytes | None
    emitted_at: float | None
    #: The projected row itself (what `data` encodes), kept while it travels in memory.
    source: dict[str, Any] | None = None


@dataclass(slots=True)
class RejectedRow:
    """An event row that cannot become a pending row (no primary key value): kept with its
    reason, shown by the API, and counted as failed by the sync's next run."""

    sync_id: str
    reason: str
    data: bytes
    created_at: float = 0.0
    run_id: str | None = None


@dataclass(slots=True)
class SnapshotProgress:
    """Keys seen in open snapshots, and the snapshots a `last: true` event closed."""

    keys: list[tuple[str, str, str]] = field(default_factory=list)  # (sync_id, snapshot, key)
    closed: list[tuple[str, str]] = field(default_factory=list)  # (sync_id, snapshot)
    #: Rows refused at ingest, stored in the same transaction.
    rejected: list[RejectedRow] = field(default_factory=list)
    #: Syncs whose source table was truncated: every row they hold is planned as removed.
    truncated: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.keys or self.closed or self.rejected or self.truncated)

    def snapshots(self) -> set[tuple[str, str]]:
        found = {(sync_id, snap) for sync_id, snap, _ in self.keys}
        found.update(self.closed)
        return found

    def without(self, done: set[tuple[str, str]]) -> SnapshotProgress:
        """This progress less what concerns snapshots already closed (a replayed message)."""
        return SnapshotProgress(
            keys=[k for k in self.keys if (k[0], k[1]) not in done],
            closed=[c for c in self.closed if c not in done],
            rejected=self.rejected,
            truncated=self.truncated,
        )


@dataclass(slots=True)
class PendingRow:
    """A row waiting to be sent; `seq` tells versions of the same key apart. A page read for a
    run also carries what the destination holds for the key (`synced_*`, None if nothing)."""

    key: str
    seq: int
    op: PendingOp
    data: dict[str, Any] | None  # the source columns of an upsert
    row_hash: bytes | None
    emitted_at: float | None
    attempts: int = 0
    error: str | None = None
    last_attempt_at: float | None = None
    synced_hash: bytes | None = None
    #: For a delete of a key the destination holds: the source columns of its last upsert.
    synced_source: dict[str, Any] | None = None


@dataclass(slots=True)
class SyncedRow:
    """What the destination holds for a key: the hash of its source columns; `source` is the
    newest version received of those columns (the one sent, unless a newer one is pending)."""

    key: str
    row_hash: bytes
    source: bytes | None


@dataclass(slots=True)
class RowChange:
    """One row to send: the destination payload plus what the store needs to record it."""

    op: ChangeOp
    key: str
    data: dict[str, Any]
    seq: int
    row_hash: bytes | None = None  # None for removed rows
    emitted_at: float | None = None

    def payload(self) -> dict[str, Any]:
        return {"op": self.op, "key": self.key, "data": self.data}


@dataclass(slots=True)
class RowFailure:
    """A row that could not be delivered (or planned), with the reason kept for the next run."""

    key: str
    seq: int
    op: ChangeOp
    error: str


@dataclass(slots=True)
class RowOutcomes:
    """Everything one store transaction records about a set of rows of one sync."""

    delivered: list[RowChange] = field(default_factory=list)
    failed: list[RowFailure] = field(default_factory=list)
    dropped: list[tuple[str, int]] = field(default_factory=list)  # (key, seq) needing no send

    def __bool__(self) -> bool:
        return bool(self.delivered or self.failed or self.dropped)
