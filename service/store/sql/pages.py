"""Reads of pending rows: a run's pages in seq order, the API's pages by key, counts, and what
the destination holds. How a page leaves the database is written per dialect, side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from service.core.rows import PendingRow, SyncedRow
from service.store.conn import Conn

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
#: What the API lists of a pending row: neither data nor hash, which it does not show (up to
#: a thousand wide rows a request would be read whole for nothing).
LISTED_FIELDS = tuple(("NULL", "") if kind else (sql, kind) for sql, kind in PENDING_FIELDS)
PAGE_FIELDS = (
    *PENDING_FIELDS,
    ("synced_hash", "bytes"),
    ("CASE WHEN op = 'delete' AND synced_hash IS NOT NULL THEN data END", "json"),
)
_PENDING_AFTER = "FROM row_state WHERE sync_id = ? AND pending = 1 AND seq > ?"
#: A run's page of pending rows, in seq order: the first `limit` rows after the cursor (params
#: sync, after, upto, limit, max bytes), cut after the row that brings their data to `max
#: bytes`, so a page of wide rows stays small (and within SQLite's largest value, as a page
#: leaves SQLite as one). The first row always makes the page. The cut is the page's last seq,
#: the one upper bound the partial index on pending rows is searched by.
PENDING_PAGE = (
    f"{_PENDING_AFTER} AND seq <= (SELECT max(seq) FROM "
    "(SELECT seq, SUM(n) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING) - n AS before FROM "
    f"(SELECT seq, COALESCE(length(data), 0) AS n {_PENDING_AFTER} AND seq <= ? "
    "ORDER BY seq LIMIT ?) AS head) AS sized WHERE before < ?) ORDER BY seq"
)


def page_params(
    sync_id: str, after_seq: int, upto_seq: int, limit: int, max_bytes: int
) -> tuple[Any, ...]:
    """PENDING_PAGE's parameters."""
    return (sync_id, after_seq, sync_id, after_seq, upto_seq, limit, max_bytes)


PENDING_COUNTS = "SELECT sync_id, COUNT(*) FROM row_state WHERE pending = 1 GROUP BY sync_id"
FAILED_COUNTS = (
    "SELECT sync_id, COUNT(*) FROM row_state WHERE pending = 1 AND error IS NOT NULL "
    "GROUP BY sync_id"
)
_SYNCED = (
    "SELECT key, synced_hash, data FROM row_state WHERE sync_id = ? AND synced_hash IS NOT NULL"
)
MAX_PENDING_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM row_state WHERE sync_id = ? AND pending = 1"


def select_pending(
    sync_id: str, failed_only: bool, limit: int, offset: int, workspace_id: str | None = None
) -> tuple[str, list[Any]]:
    """The FROM ... of one page of pending rows by key, plus one row to tell whether more
    follow (LISTED_FIELDS)."""
    sql = "FROM row_state WHERE sync_id = ? AND pending = 1"
    params: list[Any] = [sync_id]
    if failed_only:
        sql += " AND error IS NOT NULL"
    if workspace_id is not None:
        sql += f" AND {IN_WORKSPACE}"
        params.append(workspace_id)
    return sql + " ORDER BY key LIMIT ? OFFSET ?", [*params, limit + 1, offset]


#: The sync of the row belongs to the workspace `?`.
IN_WORKSPACE = "sync_id IN (SELECT id FROM syncs WHERE workspace_id = ?)"


# SQLite ----------------------------------------------------------------------------------
# One value for the whole page: a row-by-row fetch returns to Python (and waits for the GIL)
# after every row.


def _json_rows(fields: tuple[tuple[str, str], ...], rest: str) -> str:
    """The rows as one JSON array of arrays in one value; JSON blobs embedded as JSON, bytes
    as hex."""
    inner = ", ".join(f"{sql} AS f{i}" for i, (sql, _) in enumerate(fields))
    values = ", ".join(
        f"json(f{i})" if kind == "json" else f"hex(f{i})" if kind == "bytes" else f"f{i}"
        for i, (_, kind) in enumerate(fields)
    )
    return f"SELECT json_group_array(json_array({values})) FROM (SELECT {inner} {rest})"


class SqlitePages:
    @staticmethod
    async def pending(
        conn: Conn, fields: tuple[tuple[str, str], ...], rest: str, params: Sequence[Any]
    ) -> list[PendingRow]:
        page = await conn.fetchval(_json_rows(fields, rest), *params)
        hashes = [i for i, (_, kind) in enumerate(fields) if kind == "bytes"]
        found = []
        for values in orjson.loads(page):
            for i in hashes:
                values[i] = bytes.fromhex(values[i]) if values[i] else None
            found.append(PendingRow(*values))
        return found

    #: What the destination holds for any number of keys, ?2 a JSON array of them.
    SYNCED = f"{_SYNCED} AND key IN (SELECT value FROM json_each(?))"

    @staticmethod
    def keys(keys: Sequence[str]) -> bytes:
        return orjson.dumps(list(keys))


# PostgreSQL ------------------------------------------------------------------------------


class PostgresPages:
    @staticmethod
    async def pending(
        conn: Conn, fields: tuple[tuple[str, str], ...], rest: str, params: Sequence[Any]
    ) -> list[PendingRow]:
        rows = await conn.fetch(f"SELECT {', '.join(sql for sql, _ in fields)} {rest}", *params)
        json_at = [i for i, (_, kind) in enumerate(fields) if kind == "json"]
        found = []
        for r in rows:
            values = list(r)
            for i in json_at:
                if values[i] is not None:
                    values[i] = orjson.loads(values[i])
            found.append(PendingRow(*values))
        return found

    SYNCED = f"{_SYNCED} AND key = ANY(?::text[])"

    @staticmethod
    def keys(keys: Sequence[str]) -> list[str]:
        return list(keys)


def synced_rows(rows: list[Any]) -> dict[str, SyncedRow]:
    return {key: SyncedRow(key, row_hash, source) for key, row_hash, source in rows}
