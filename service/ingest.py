"""Ingest: event rows -> the newest pending version per (sync, key), one store write per batch."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from service.core.events import ChangeEvent
from service.core.metrics import Metrics
from service.core.rows import PendingWrite, RouteIndex, SyncRoute
from service.store.base import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngestResult:
    sync_ids: set[str] = field(default_factory=set)
    rows: int = 0
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
    events: Sequence[ChangeEvent], routes: RouteIndex
) -> tuple[list[PendingWrite], IngestResult]:
    """Pending writes for every routed row; within the batch the last version of a key wins."""
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
            result.rejected += _project_rows(event.rows, route, op, emitted, latest, dumps)
    result.rows = len(latest)
    result.sync_ids = {sync_id for sync_id, _ in latest}
    return list(latest.values()), result


def _project_rows(
    rows: list[dict[str, object]],
    route: SyncRoute,
    op: str,
    emitted: float | None,
    latest: dict[tuple[str, str], PendingWrite],
    dumps: object,
) -> int:
    rejected = 0
    pk = route.primary_key
    columns = route.referenced_columns
    sync_id = route.sync_id
    for row in rows:
        key = row_key(row.get(pk))
        if key is None:
            rejected += 1
            continue
        if op == "delete":
            latest[(sync_id, key)] = PendingWrite(sync_id, key, "delete", None, None, emitted)
            continue
        data = dumps({c: row.get(c) for c in columns})  # type: ignore[operator]
        latest[(sync_id, key)] = PendingWrite(sync_id, key, "upsert", data, row_hash(data), emitted)
    return rejected


class Ingest:
    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def write(self, events: Sequence[ChangeEvent], routes: RouteIndex) -> IngestResult:
        """Project and store; returns once the store transaction committed."""
        writes, result = project_events(events, routes)
        if writes:
            with self._metrics.store_transaction_seconds.time():
                await self._store.write_pending(writes)
            self._metrics.rows_ingested.inc(len(writes))
        if result.rejected:
            self._metrics.rows_rejected.labels("missing_key").inc(result.rejected)
            log.warning("rejected %d rows without a primary key value", result.rejected)
        if result.unrouted_events:
            self._metrics.events_unrouted.inc(result.unrouted_events)
        return result
