"""Ingest: event rows -> the newest pending version per (sync, key), one store write per batch."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field

import orjson

from service.core.events import Change, SourceChange
from service.core.metrics import Metrics
from service.core.rows import (
    ROW_HASH_BYTES,
    PendingWrite,
    RejectedRow,
    RouteIndex,
    SnapshotProgress,
    SyncRoute,
)
from service.store.base import Store

log = logging.getLogger(__name__)

#: Longest primary key value, in characters: longer keys can't be indexed by every store
#: (PostgreSQL's B-tree entries stop near 2,700 bytes), so such a row is rejected alone.
MAX_KEY_LENGTH = 512
#: Longest reason kept with a rejected row, in characters.
MAX_REASON = 500

#: Why a row is rejected: the label of sync_rows_rejected_total{reason}, from this fixed set.
REJECT_REASONS = (
    "missing_key",
    "key_type",
    "key_too_long",
    "key_invalid",
    "unencodable",
    "non_finite",
    "unconvertible",
    "missing_column",
    "unavailable",
)

#: orjson.dumps. A row's JSON is copied into a buffer of its own size before it is kept
#: (`bytes(memoryview(...))`, the cheapest copy: 0.18 us for 270 bytes against 0.41 through
#: `str`): orjson 3.12 and later return each result in a buffer of at least 4 KiB, so 100,000
#: rows of 200 bytes held 390 MiB instead of 23.
_Dumps = Callable[[object], bytes]


@dataclass(slots=True)
class IngestResult:
    #: Syncs with something new to run: pending rows, a closed snapshot, rejected rows.
    sync_ids: set[str] = field(default_factory=set)
    rows: int = 0
    #: Rows the destinations hold already, left out of the store.
    unchanged: int = 0
    rejected: int = 0
    #: Rejected rows by reason (REJECT_REASONS).
    rejected_by: dict[str, int] = field(default_factory=dict)
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
    return hashlib.blake2b(projected, digest_size=ROW_HASH_BYTES).digest()


def _finite(value: object) -> bool:
    """False when a float anywhere in `value` is NaN or infinite: JSON can't carry it (orjson
    would write null, silently changing the row)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _key_problem(value: object, key: str | None) -> tuple[str, str] | None:
    """(reason, text) when the key value can't identify a row; None when it can."""
    if key is None:
        if isinstance(value, (dict, list)):
            kind = "an object" if isinstance(value, dict) else "an array"
            return "key_type", f"the primary key is {kind}, not a scalar"
        return "missing_key", ""
    if len(key) > MAX_KEY_LENGTH:
        return "key_too_long", f"the primary key has {len(key)} characters (most {MAX_KEY_LENGTH})"
    if "\x00" in key:
        return "key_invalid", "the primary key holds a NUL character, which PostgreSQL can't store"
    return None


def _scrub(value: object, depth: int = 0) -> object:
    """A JSON-encodable stand-in for a refused row, kept to show why it was refused."""
    if depth > 100:
        return "…"
    if isinstance(value, dict):
        return {str(k): _scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return repr(value)


def encode_refused(row: object) -> bytes:
    """The refused row as JSON, whatever it holds."""
    try:
        return orjson.dumps(row)
    except (TypeError, RecursionError):
        return orjson.dumps(_scrub(row))


@dataclass(slots=True)
class _Refusals:
    """Rows refused while projecting one event for one route."""

    rows: list[tuple[dict[str, object], str, str]] = field(default_factory=list)

    def add(self, row: dict[str, object], reason: str, text: str) -> None:
        self.rows.append((row, reason, text))


def project_events(
    events: Sequence[Change],
    routes: RouteIndex,
    snapshot: SnapshotProgress | None = None,
    *,
    event_routes: Sequence[RouteIndex] | None = None,
    suspect: Container[int] = (),
    start: int = 0,
    end: int | None = None,
) -> tuple[list[PendingWrite], IngestResult]:
    """Pending writes for every routed row of events[start:end]; within it the last version of
    a key wins. Keys of snapshot events, and the snapshots they close, go into `snapshot`, and
    so do refused rows. `event_routes[i]`, where given, is the index for event i (the models
    of the workspace owning its topic); `suspect` holds the events whose values are checked
    one by one for non-finite numbers."""
    result = IngestResult()
    latest: dict[tuple[str, str], PendingWrite] = {}
    dumps = orjson.dumps
    stop = len(events) if end is None else end
    i = start
    while i < stop:
        event = events[i]
        index = routes if event_routes is None else event_routes[i]
        targets = index.get(event.model_id)
        if not targets:
            result.unrouted_events += 1
            i += 1
            continue
        if not _plain(event, i, suspect):
            _project_event(event, i in suspect, targets, latest, dumps, result, snapshot)
            i += 1
            continue
        # A run of plain events routed alike is projected in one pass a route, with no per-row
        # error handling: a run orjson refuses is done again event by event.
        run_end = i + 1
        while (
            run_end < stop
            and (routes if event_routes is None else event_routes[run_end]).get(
                events[run_end].model_id
            )
            is targets
            and _plain(events[run_end], run_end, suspect)
        ):
            run_end += 1
        for route in targets:
            try:
                refused = _project_run(events, i, run_end, route, latest, dumps)
            except (TypeError, ValueError, RecursionError):
                for k in range(i, run_end):
                    _project_event(events[k], False, (route,), latest, dumps, result, snapshot)
                continue
            if refused is not None and refused.rows:
                _note_refused(refused, route, result, snapshot)
        i = run_end
    result.rows = len(latest)
    result.sync_ids = {sync_id for sync_id, _ in latest}
    if snapshot is not None:
        result.sync_ids.update(sync_id for sync_id, _ in snapshot.closed)
        result.sync_ids.update(r.sync_id for r in snapshot.rejected)
        result.sync_ids.update(snapshot.truncated)
    return list(latest.values()), result


def _plain(event: Change, i: int, suspect: Container[int]) -> bool:
    """An event a run may take: decoded from the contract's format, sure to hold finite
    numbers only, and no part of a snapshot."""
    return event.snapshot_id is None and i not in suspect and not isinstance(event, SourceChange)


def _project_event(
    event: Change,
    careful: bool,
    targets: Sequence[SyncRoute],
    latest: dict[tuple[str, str], PendingWrite],
    dumps: _Dumps,
    result: IngestResult,
    snapshot: SnapshotProgress | None,
) -> None:
    """One event for each of its routes: a decoded database change, a snapshot's event, one
    whose values may not be finite (`careful`), or an event of a run done again."""
    emitted = event.emitted_at
    op = "delete" if event.op == "delete" else "upsert"
    foreign = isinstance(event, SourceChange)
    for route in targets:
        if foreign:
            assert isinstance(event, SourceChange)
            if event.truncate:
                if snapshot is not None:
                    snapshot.truncated.append(route.sync_id)
                continue
            problem = _source_problem(event, route)
            if problem is not None:
                refused = _Refusals()
                for row in event.rows:
                    refused.add(row, *problem)
                _note_refused(refused, route, result, snapshot)
                continue
        # Tried at once first; only when orjson refuses a value (its JSONEncodeError is a
        # TypeError) is it done again row by row, so one bad row costs its own rejection.
        slow = careful
        refused = None
        if not slow:
            try:
                refused = _project_run((event,), 0, 1, route, latest, dumps)
            except (TypeError, ValueError, RecursionError):
                slow = True
        if slow:
            refused = _project_one_by_one(event.rows, route, op, emitted, latest, dumps)
        if refused is not None and refused.rows:
            _note_refused(refused, route, result, snapshot)
        if event.snapshot_id is not None and snapshot is not None:
            _note_snapshot(event, route, snapshot)


def _source_problem(event: SourceChange, route: SyncRoute) -> tuple[str, str] | None:
    """(reason, text) when a decoded change can't feed this route: a value that could not be
    converted, a column the route reads that the database did not send (an unchanged TOASTed
    value) or that the row no longer has (dropped from the table)."""
    if event.rejected is not None:
        return "unconvertible", event.rejected[:MAX_REASON]
    if event.op == "delete":
        return None
    if event.unavailable:
        missing = [c for c in route.referenced_columns if c in event.unavailable]
        if missing:
            return "unavailable", (
                f"the database did not send column(s) {', '.join(missing)} (an unchanged TOASTed "
                "value); give the table REPLICA IDENTITY FULL to have them sent"
            )[:MAX_REASON]
    if event.strict and event.rows:
        row = event.rows[0]
        lacking = [c for c in route.referenced_columns if c not in row]
        if lacking:
            return "missing_column", (
                f"the row has no column(s) {', '.join(lacking)}, which the model reads "
                "(dropped from the source table?)"
            )[:MAX_REASON]
    return None


def _note_refused(
    refused: _Refusals, route: SyncRoute, result: IngestResult, snapshot: SnapshotProgress | None
) -> None:
    result.rejected += len(refused.rows)
    for row, reason, text in refused.rows:
        result.rejected_by[reason] = result.rejected_by.get(reason, 0) + 1
        if snapshot is not None:
            why = text or f"no value for the primary key {route.primary_key!r}"
            snapshot.rejected.append(RejectedRow(route.sync_id, why, encode_refused(row)))


def _note_snapshot(event: Change, route: SyncRoute, snapshot: SnapshotProgress) -> None:
    snapshot_id = event.snapshot_id
    assert snapshot_id is not None
    pk = route.primary_key
    for row in event.rows:
        key = row_key(row.get(pk))
        if key is not None and _key_problem(None, key) is None:
            snapshot.keys.append((route.sync_id, snapshot_id, key))
    if event.last:
        snapshot.closed.append((route.sync_id, snapshot_id))


def segment_bounds(events: Sequence[Change]) -> list[tuple[int, int]]:
    """(start, end) of the batch's parts: it is cut after each event that closes a snapshot or
    truncates a table, so the removals it plans come after the rows before it and before the
    rows after it."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for i, event in enumerate(events):
        if (event.op == "snapshot" and event.last) or (
            isinstance(event, SourceChange) and event.truncate
        ):
            cuts.append((start, i + 1))
            start = i + 1
    if start < len(events) or not cuts:
        cuts.append((start, len(events)))
    return cuts


def segments(events: Sequence[Change]) -> list[Sequence[Change]]:
    """The events of each part (see `segment_bounds`)."""
    return [events[a:b] for a, b in segment_bounds(events)]


def _deleted(
    latest: dict[tuple[str, str], PendingWrite], sync_id: str, key: str, emitted: float | None
) -> PendingWrite:
    """A delete; it keeps the source columns of an upsert of the key earlier in the batch, the
    version a removal sends when the destination may hold it."""
    before = latest.get((sync_id, key))
    source = before.source if before is not None else None
    return PendingWrite(sync_id, key, "delete", None, None, emitted, source)


def _project_run(
    events: Sequence[Change],
    start: int,
    end: int,
    route: SyncRoute,
    latest: dict[tuple[str, str], PendingWrite],
    dumps: _Dumps,
) -> _Refusals | None:
    """Adds the routed rows of events[start:end] to `latest`; returns the rows refused (None:
    none was)."""
    refused = None
    pk = route.primary_key
    columns = route.referenced_columns
    sync_id = route.sync_id
    blake2b = hashlib.blake2b
    size = ROW_HASH_BYTES
    for i in range(start, end):
        event = events[i]
        emitted = event.emitted_at
        delete = event.op == "delete"
        for row in event.rows:
            value = row.get(pk)
            # row_key's answer for the common cases (a non-empty string, an int), without the
            # call.
            kind = type(value)
            key = (value or None) if kind is str else str(value) if kind is int else row_key(value)
            if key is None or len(key) > MAX_KEY_LENGTH or "\x00" in key:
                reason, text = _key_problem(value, key)  # type: ignore[misc]
                refused = refused or _Refusals()
                refused.add(row, reason, text)
                continue
            if delete:
                latest[(sync_id, key)] = _deleted(latest, sync_id, key, emitted)
                continue
            # A row that has exactly the referenced columns, in their order, is its own
            # projection.
            projected = row if tuple(row) == columns else {c: row.get(c) for c in columns}
            data = bytes(memoryview(dumps(projected)))
            digest = blake2b(data, digest_size=size).digest()
            latest[(sync_id, key)] = PendingWrite(
                sync_id, key, "upsert", data, digest, emitted, projected
            )
    return refused


def _project_one_by_one(
    rows: list[dict[str, object]],
    route: SyncRoute,
    op: str,
    emitted: float | None,
    latest: dict[tuple[str, str], PendingWrite],
    dumps: _Dumps,
) -> _Refusals:
    """The slow path: every row checked on its own (non-finite numbers included)."""
    refused = _Refusals()
    pk = route.primary_key
    columns = route.referenced_columns
    sync_id = route.sync_id
    for row in rows:
        value = row.get(pk)
        key = row_key(value)
        problem = _key_problem(value, key)
        if problem is not None:
            refused.add(row, *problem)
            continue
        assert key is not None
        if isinstance(value, float) and not math.isfinite(value):
            refused.add(row, "non_finite", "the primary key is not a finite number")
            continue
        if op == "delete":
            latest[(sync_id, key)] = _deleted(latest, sync_id, key, emitted)
            continue
        projected = row if tuple(row) == columns else {c: row.get(c) for c in columns}
        if not _finite(projected):
            refused.add(row, "non_finite", "a value is NaN or infinite, which JSON can't carry")
            continue
        try:
            data = bytes(memoryview(dumps(projected)))
        except (TypeError, ValueError, RecursionError) as exc:
            refused.add(row, "unencodable", f"a value can't be encoded as JSON: {exc}"[:300])
            continue
        latest[(sync_id, key)] = PendingWrite(
            sync_id, key, "upsert", data, row_hash(data), emitted, projected
        )
    return refused


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

    def prepare(
        self,
        events: Sequence[Change],
        routes: RouteIndex,
        *,
        event_routes: Sequence[RouteIndex] | None = None,
        suspect: Container[int] = (),
    ) -> list[PreparedPart]:
        parts = []
        for start, end in segment_bounds(events):
            snapshot = SnapshotProgress()
            writes, found = project_events(
                events,
                routes,
                snapshot,
                event_routes=event_routes,
                suspect=suspect,
                start=start,
                end=end,
            )
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
                result.sync_ids.update(snapshot.truncated)
            result.rows += found.rows
            result.unchanged += len(writes) - kept
            result.rejected += found.rejected
            for reason, n in found.rejected_by.items():
                result.rejected_by[reason] = result.rejected_by.get(reason, 0) + n
            result.unrouted_events += found.unrouted_events
            if snapshot.closed:
                log.info("snapshots closed: %s", ", ".join(f"{s}/{n}" for s, n in snapshot.closed))
        self._count(result)
        return result

    async def write(self, events: Sequence[Change], routes: RouteIndex) -> IngestResult:
        """`prepare` and `store` in one step."""
        return await self.store(self.prepare(events, routes))

    def _count(self, result: IngestResult) -> None:
        if result.rows:
            self._metrics.rows_ingested.inc(result.rows)
        if result.unchanged:
            self._metrics.rows_unchanged.inc(result.unchanged)
        if result.rejected:
            for reason, n in result.rejected_by.items():
                self._metrics.rows_rejected.labels(reason).inc(n)
            log.warning(
                "rejected %d rows (%s)",
                result.rejected,
                ", ".join(f"{r}: {n}" for r, n in sorted(result.rejected_by.items())),
            )
        if result.unrouted_events:
            self._metrics.events_unrouted.inc(result.unrouted_events)
