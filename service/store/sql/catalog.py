"""Catalog SQL: sources, models, destinations and syncs as JSON documents plus the columns
queries use. The same statements serve both dialects (`?` placeholders)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from service.core.models import Destination, Model, Source, Sync, SyncStatus
from service.store.base import TABLES, CatalogItem, T

log = logging.getLogger(__name__)

#: After a sync is written: disabling shows as `disabled`, enabling again as `pending`; any
#: other status is the runs' and stays.
SYNC_STATUS_AFTER_WRITE = (
    "UPDATE syncs SET status = CASE WHEN ? THEN 'disabled' "
    "WHEN status IS NULL OR status = 'disabled' THEN 'pending' ELSE status END WHERE id = ?"
)
#: A sync whose stored document can't be read can't run: it shows failed.
MARK_UNREADABLE_FAILED = (
    "UPDATE syncs SET status = 'failed' WHERE id = ? AND COALESCE(status, '') <> 'failed'"
)
BUMP_VERSION = "UPDATE meta SET value = value + 1 WHERE name = 'catalog_version'"
VERSION = "SELECT value FROM meta WHERE name = 'catalog_version'"

#: Per kind: (table whose rows may refer to it, query returning a referring id, field at
#: fault, what refers).
REFERENCE_CHECKS: dict[type[CatalogItem], tuple[str, str, str, str]] = {
    Model: ("syncs", "SELECT id FROM syncs WHERE model_id = ? LIMIT 1", "modelId", "sync"),
    Destination: (
        "syncs",
        "SELECT id FROM syncs WHERE destination_id = ? LIMIT 1",
        "destinationId",
        "sync",
    ),
    Source: ("models", "SELECT id FROM models WHERE source_id = ? LIMIT 1", "sourceId", "model"),
}

#: What hangs off a sync and goes with it.
SYNC_CHILDREN = (
    "row_state",
    "sync_runs",
    "rejected_rows",
    "snapshot_keys",
    "snapshots",
    "sync_leases",
    "run_requests",
)


def catalog_columns(item: CatalogItem) -> dict[str, Any]:
    """Column values of one catalog row: the JSON document plus the columns queries use."""
    columns: dict[str, Any] = {
        "id": item.id,
        "workspace_id": item.workspace_id,
        "slug": item.slug,
        "doc": item.model_dump_json(by_alias=True),
    }
    if isinstance(item, Sync):
        columns["model_id"] = item.model_id
        columns["destination_id"] = item.destination_id
    elif isinstance(item, Model):
        columns["source_id"] = item.source_id
    return columns


def upsert_item(item: CatalogItem) -> tuple[str, list[Any]]:
    values = catalog_columns(item)
    columns = list(values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    sql = (
        f"INSERT INTO {TABLES[type(item)]} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))}) ON CONFLICT (id) DO UPDATE SET {updates}"
    )
    return sql, list(values.values())


def select_items(kind: type[CatalogItem], workspace_id: str | None) -> tuple[str, list[Any]]:
    """SELECT of a kind's rows, ending in a WHERE clause the caller may extend with AND."""
    extra = ", status, last_run_at" if kind is Sync else ""
    sql = f"SELECT id, doc{extra} FROM {TABLES[kind]} WHERE 1 = 1"
    if workspace_id is None:
        return sql, []
    return sql + " AND workspace_id = ?", [workspace_id]


def item_from_row(kind: type[T], row: Any) -> T | None:
    """The item of one row; None (and a log line) when its stored document does not parse,
    so one damaged item never fails a whole list."""
    try:
        item = kind.model_validate_json(row[1])
    except (ValueError, RecursionError) as exc:
        log.error("%s %s: stored document unreadable, left out: %s", kind.__name__, row[0], exc)
        return None
    if isinstance(item, Sync):
        if row[2] is not None:
            item.status = SyncStatus(row[2])
        item.last_run_at = _timestamp(row[3])
    return item


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)
