"""Ingest: event rows -> the newest pending version per (sync, key), one store write per batch."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from service.core.events import ChangeEvent
from service.core.metrics import Metrics
from service.core.rows import (
    PendingWrite,
    RejectedRow,
    RouteIndex,
    SnapshotProgress,
    SyncRoute,
)
from service.store.base import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestResult:
    #: Syncs with something new to run: pending rows, a closed snapshot, rejected rows.
    sync_ids: set[str] = field(default_factory=set)
    rows: int = 0
    #: Rows the destinations hold already, left out of the store.
    unchanged: int = 0
    rejected: int = 0
    unrouted_events: int = 0


def row_key(value: object) -> str | None:
    """The primary key as a string; None when missing, null or not a scalar."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def row_hash(projected: bytes) -> bytes:
    return hashlib.blake2b(projected, digest_size=16).digest()


def project_events(
    events: Sequence[ChangeEvent], routes: RouteIndex, snapshot: SnapshotProgress | None = None
) -> tuple[list[PendingWrite], IngestResult]:
    """Pending writes for every routed row; within the batch the last version of a key wins.
    Keys of snapshot events, and the snapshots they close, go into `snapshot`."""
    result = IngestResult()
    latest: dict[tuple[str, str], PendingWrite] = {}
    dumps = orjson.dumps
    for event in events:
        targets = routes.get(event.model_id)
        if not targets:
            result.unrouted_events += 1
            continue
        emitted = event.emitted_at.timestamp() if event.emitted_at else None
        op = "delete" if event.op == "delete" else "upsert"
        for route in targets:
            refused = _project_rows(event.rows, route, op, emitted, latest, dumps)
            result.rejected += len(refused)
            if refused and snapshot is not None:
                snapshot.rejected.extend(
                    RejectedRow(
                        route.sync_id,
                        f"no value for the primary key {route.primary_key!r}",
                        dumps(row),
                    )
                    for row in refused
                )
            if event.snapshot_id is not None and snapshot is not None:
                _note_snapshot(event, route, snapshot)
    result.rows = len(latest)
    result.sync_ids = {sync_id for sync_id, _ in latest}
    if snapshot is not None:
        result.sync_ids.update(sync_id for sync_id, _ in snapshot.closed)
        result.sync_ids.update(r.sync_id for r in snapshot.rejected)
    return list(latest.values()), result


def _note_snapshot(event: ChangeEvent, route: SyncRoute, snapshot: SnapshotProgress) -> None:
    snapshot_id = event.snapshot_id
    assert snapshot_id is not None
    pk = route.primary_key
    for row in event.rows:
        key = row_key(row.get(pk))
        if key is not None:
            snapshot.keys.append((route.sync_id, snapshot_id, key))
    if event.last:
        snapshot.closed.append((route.sync_id, snapshot_id))


def segments(events: Sequence[ChangeEvent]) -> list[Sequence[ChangeEvent]]:
    """The batch cut after each event that closes a snapshot, so the removals a close plans
    come after the rows before it and before the rows after it."""
    cuts: list[Sequence[ChangeEvent]] = []
    start = 0
    for i, event in enumerate(events):
        if event.op == "snapshot" and event.last:
            cuts.append(events[start : i + 1])
            start = i + 1
    if start < len(events) or not cuts:
        cuts.append(events[start:])
    return cuts


def _project_rows(
    rows: list[dict[str, object]],
    route: SyncRoute,
    op: str,
    emitted: float | None,
    latest: dict[tuple[str, str], PendingWrite],
    dumps: object,
) -> list[dict[str, object]]:
    """Adds the routed rows to `latest`; returns the rows refused for want of a key."""
    rejected: list[dict[str, object]] = []
    pk = route.primary_key
    columns = route.referenced_columns
    sync_id = route.sync_id
    for row in rows:
        key = row_key(row.get(pk))
        if key is None:
            rejected.append(row)
            continue
        if op == "delete":
            latest[(sync_id, key)] = PendingWrite(sync_id, key, "delete", None, None, emitted)
            continue
        # A row that has exactly the referenced columns, in their order, is its own projection.
        projected = row if tuple(row) == columns else {c: row.get(c) for c in columns}
        data = dumps(projected)  # type: ignore[operator]
        latest[(sync_id, key)] = PendingWrite(sync_id, key, "upsert", data, row_hash(data), emitted)
    return rejected


@dataclass(slots=True)
class PreparedPart:
    """One store transaction's worth of a batch: its rows and snapshot progress."""

    writes: list[PendingWrite]
    snapshot: SnapshotProgress
    found: IngestResult


class Ingest:
    """`prepare` is pure work on the event loop (projection, hashing); `store` writes what it
    prepared. The consumer prepares the next batch while the store writes this one."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def prepare(self, events: Sequence[ChangeEvent], routes: RouteIndex) -> list[PreparedPart]:
        parts = []
        for part in segments(events):
            snapshot = SnapshotProgress()
            writes, found = project_events(part, routes, snapshot)
            parts.append(PreparedPart(writes, snapshot, found))
        return parts

    async def store(self, parts: Sequence[PreparedPart]) -> IngestResult:
        """Store the prepared parts; returns once the store committed (one transaction per
        part: a batch is cut after each event that closes a snapshot)."""
        result = IngestResult()
        for part in parts:
            writes, snapshot, found = part.writes, part.snapshot, part.found
            kept = 0
            if writes or snapshot:
                with self._metrics.store_transaction_seconds.time():
                    kept = await self._store.write_pending(writes, snapshot)
            if kept:
                result.sync_ids |= found.sync_ids
            else:  # every row unchanged: only snapshots and rejected rows need a run
                result.sync_ids.update(sync_id for sync_id, _ in snapshot.closed)
                result.sync_ids.update(r.sync_id for r in snapshot.rejected)
            result.rows += found.rows
            result.unchanged += len(writes) - kept
            result.rejected += found.rejected
            result.unrouted_events += found.unrouted_events
            if snapshot.closed:
                log.info("snapshots closed: %s", ", ".join(f"{s}/{n}" for s, n in snapshot.closed))
        self._count(result)
        return result

    async def write(self, events: Sequence[ChangeEvent], routes: RouteIndex) -> IngestResult:
        """`prepare` and `store` in one step."""
        return await self.store(self.prepare(events, routes))

    def _count(self, result: IngestResult) -> None:
        if result.rows:
            self._metrics.rows_ingested.inc(result.rows)
        if result.unchanged:
            self._metrics.rows_unchanged.inc(result.unchanged)
        if result.rejected:
            self._metrics.rows_rejected.labels("missing_key").inc(result.rejected)
            log.warning("rejected %d rows without a primary key value", result.rejected)
        if result.unrouted_events:
            self._metrics.events_unrouted.inc(result.unrouted_events)
