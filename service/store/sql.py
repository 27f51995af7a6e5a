"""SQL shared by the SQLite and PostgreSQL stores, written with `?` placeholders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.core.models import Destination, Model, Source, Sync, SyncRun, SyncStatus
from service.store.base import TABLES, CatalogItem, RunQuery, T

#: After a sync is written: disabling shows as `disabled`, enabling again as `pending`; any
#: other status is the runs' and stays.
SYNC_STATUS_AFTER_WRITE = (
    "UPDATE syncs SET status = CASE WHEN ? THEN 'disabled' "
    "WHEN status IS NULL OR status = 'disabled' THEN 'pending' ELSE status END WHERE id = ?"
)

#: Per kind: (query returning a referring id, field at fault, what refers).
REFERENCE_CHECKS: dict[type[CatalogItem], tuple[tuple[str, str, str], ...]] = {
    Model: (("SELECT id FROM syncs WHERE model_id = ? LIMIT 1", "modelId", "sync"),),
    Destination: (
        ("SELECT id FROM syncs WHERE destination_id = ? LIMIT 1", "destinationId", "sync"),
    ),
    Source: (("SELECT id FROM models WHERE source_id = ? LIMIT 1", "sourceId", "model"),),
}

_RUN_ORDER = {
    "createdAt": "created_at",
    "startedAt": "started_at",
    "finishedAt": "finished_at",
    "id": "id",
}


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


def select_items(kind: type[CatalogItem], workspace_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """SELECT of a kind's rows, ending in a WHERE clause the caller may extend with AND."""
    table = TABLES[kind]
    extra = ", status, last_run_at" if kind is Sync else ""
    sql = f"SELECT doc{extra} FROM {table} WHERE 1 = 1"
    if workspace_id is None:
        return sql, ()
    return sql + " AND workspace_id = ?", (workspace_id,)


def item_from_row(kind: type[T], row: Any) -> T:
    item = kind.model_validate_json(row[0])
    if isinstance(item, Sync):
        if row[1] is not None:
            item.status = SyncStatus(row[1])
        item.last_run_at = _timestamp(row[2])
    return item


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


OPEN_SNAPSHOT = (
    "INSERT INTO snapshots (sync_id, snapshot_id, opened_at) VALUES (?, ?, ?) "
    "ON CONFLICT (sync_id, snapshot_id) DO NOTHING"
)
SNAPSHOT_KEY = (
    "INSERT INTO snapshot_keys (sync_id, snapshot_id, key) VALUES (?, ?, ?) "
    "ON CONFLICT (sync_id, snapshot_id, key) DO NOTHING"
)
#: The keys a closing snapshot removes: synced or pending as upsert, and absent from it.
ABSENT_FROM_SNAPSHOT = """
SELECT r.key FROM row_state r
WHERE r.sync_id = ? AND (r.synced_hash IS NOT NULL OR (r.pending = 1 AND r.op = 'upsert'))
AND NOT EXISTS (
  SELECT 1 FROM snapshot_keys k WHERE k.sync_id = r.sync_id AND k.snapshot_id = ? AND k.key = r.key
)
"""
#: Closing forgets the keys but keeps the snapshot, marked closed, for a month: a closing
#: message read again after a crash must not reopen it with only its own keys.
CLOSE_SNAPSHOT = (
    ("DELETE FROM snapshot_keys WHERE sync_id = ? AND snapshot_id = ?", False),
    ("UPDATE snapshots SET closed_at = ? WHERE sync_id = ? AND snapshot_id = ?", True),
)
PRUNE_SNAPSHOTS = "DELETE FROM snapshots WHERE closed_at < ?"
CLOSED_SNAPSHOT_RETENTION_SECONDS = 30 * 86400
IS_CLOSED = (
    "SELECT 1 FROM snapshots WHERE sync_id = ? AND snapshot_id = ? AND closed_at IS NOT NULL"
)
OPEN_SNAPSHOTS = (
    "SELECT sync_id, snapshot_id, opened_at FROM snapshots WHERE closed_at IS NULL "
    "ORDER BY opened_at"
)

STORE_REJECTED = "INSERT INTO rejected_rows (sync_id, reason, data, created_at) VALUES (?, ?, ?, ?)"
CLAIM_REJECTED = "UPDATE rejected_rows SET run_id = ? WHERE sync_id = ? AND run_id IS NULL"
#: Counted rows are kept a week for the API, then dropped.
PRUNE_REJECTED = "DELETE FROM rejected_rows WHERE run_id IS NOT NULL AND created_at < ?"
LIST_REJECTED = (
    "SELECT sync_id, reason, data, created_at, run_id FROM rejected_rows WHERE sync_id = ? "
    "ORDER BY id DESC LIMIT ? OFFSET ?"
)
REJECTED_RETENTION_SECONDS = 7 * 86400

ACQUIRE_LEASE = """
INSERT INTO sync_leases (sync_id, owner, expires_at) VALUES (?, ?, ?)
ON CONFLICT (sync_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE sync_leases.owner = excluded.owner OR sync_leases.expires_at < ?
"""
RELEASE_LEASE = "DELETE FROM sync_leases WHERE sync_id = ? AND owner = ?"

#: What a new version of a row sets (`{seq}`: how the dialect numbers it). A delete keeps the
#: source columns of the upsert before it: a removal maps them to the payload it sends.
NEW_VERSION = """
  seq = {seq}, op = excluded.op, data = COALESCE(excluded.data, row_state.data),
  row_hash = excluded.row_hash, emitted_at = excluded.emitted_at,
  attempts = 0, error = NULL, last_attempt_at = NULL, pending = 1
"""
#: When a new version of a known key counts (Store.write_pending): an older one is pending, or
#: the destination holds another version (for a delete: holds one at all).
CHANGES_WHAT_IS_HELD = """
row_state.pending = 1 OR CASE WHEN excluded.op = 'delete' THEN row_state.synced_hash IS NOT NULL
  ELSE row_state.synced_hash IS NULL OR row_state.synced_hash <> excluded.row_hash END
"""

#: PendingRow's fields as (SQL, kind): "json" for a JSON blob, "bytes" for a hash. Data only
#: for upserts (a delete keeps the old source in it); a run's page adds what the destination
#: holds, and for a removal the source columns it maps to its payload.
PENDING_FIELDS: tuple[tuple[str, str], ...] = (
    ("key", ""),
    ("seq", ""),
    ("op", ""),
    ("CASE WHEN op = 'upsert' THEN data END", "json"),
    ("row_hash", "bytes"),
    ("emitted_at", ""),
    ("attempts", ""),
    ("error", ""),
    ("last_attempt_at", ""),
)
PAGE_FIELDS = (
    *PENDING_FIELDS,
    ("synced_hash", "bytes"),
    ("CASE WHEN op = 'delete' AND synced_hash IS NOT NULL THEN data END", "json"),
)
#: A run's page of pending rows, in seq order.
PENDING_PAGE = (
    "FROM row_state WHERE sync_id = ? AND pending = 1 AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)


def select_fields(fields: tuple[tuple[str, str], ...], rest: str) -> str:
    return f"SELECT {', '.join(sql for sql, _ in fields)} {rest}"


def json_rows(fields: tuple[tuple[str, str], ...], rest: str) -> str:
    """The same rows as one JSON array of arrays in one value (SQLite: one step for the
    whole page); JSON blobs embedded as JSON, bytes as hex."""
    inner = ", ".join(f"{sql} AS f{i}" for i, (sql, _) in enumerate(fields))
    values = ", ".join(
        f"json(f{i})" if kind == "json" else f"hex(f{i})" if kind == "bytes" else f"f{i}"
        for i, (_, kind) in enumerate(fields)
    )
    return f"SELECT json_group_array(json_array({values})) FROM (SELECT {inner} {rest})"


PENDING_COUNTS = "SELECT sync_id, COUNT(*) FROM row_state WHERE pending = 1 GROUP BY sync_id"
FAILED_COUNTS = (
    "SELECT sync_id, COUNT(*) FROM row_state WHERE pending = 1 AND error IS NOT NULL "
    "GROUP BY sync_id"
)
MAX_PENDING_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM row_state WHERE sync_id = ? AND pending = 1"


def select_pending(
    sync_id: str, failed_only: bool, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """The FROM ... of one page of pending rows by key, plus one row to tell whether more
    follow (PENDING_FIELDS)."""
    sql = "FROM row_state WHERE sync_id = ? AND pending = 1"
    if failed_only:
        sql += " AND error IS NOT NULL"
    return sql + " ORDER BY key LIMIT ? OFFSET ?", [sync_id, limit + 1, offset]


def run_columns(run: SyncRun) -> tuple[Any, ...]:
    """(id, sync_id, created_at, started_at, finished_at, doc); times as epoch seconds."""
    return (
        int(run.id),
        run.sync_id,
        run.created_at.timestamp(),
        run.started_at.timestamp() if run.started_at else None,
        run.finished_at.timestamp() if run.finished_at else None,
        run.model_dump_json(),
    )


SAVE_RUN = (
    "INSERT INTO sync_runs (id, sync_id, created_at, started_at, finished_at, doc) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "started_at = excluded.started_at, finished_at = excluded.finished_at, doc = excluded.doc"
)


def select_runs(query: RunQuery) -> tuple[str, list[Any]]:
    """One page of runs plus one row, to tell whether more follow."""
    sql = "SELECT doc FROM sync_runs WHERE sync_id = ?"
    params: list[Any] = [query.sync_id]
    if query.run_id is not None:
        sql += " AND id = ?"
        params.append(int(query.run_id))
    if query.after is not None:
        sql += " AND created_at > ?"
        params.append(query.after.timestamp())
    if query.before is not None:
        sql += " AND created_at < ?"
        params.append(query.before.timestamp())
    column = _RUN_ORDER.get(query.order_by, "created_at")
    direction = "ASC" if query.ascending else "DESC"
    nulls = "NULLS LAST" if column != "id" else ""
    sql += f" ORDER BY {column} {direction} {nulls}, id {direction} LIMIT ? OFFSET ?"
    params.extend([query.limit + 1, query.offset])
    return sql, params
