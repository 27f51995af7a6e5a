"""Ingest SQL: new versions of rows, snapshots and the rows they plan as removed, rejected
rows. The hot statement (a batch of new versions) is written per dialect, side by side."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from service.core.rows import PendingWrite
from service.store.conn import Conn

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
_INSERT_VERSION = (
    "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, pending) "
)

OPEN_SNAPSHOT = (
    "INSERT INTO snapshots (sync_id, snapshot_id, opened_at) VALUES (?, ?, ?) "
    "ON CONFLICT (sync_id, snapshot_id) DO NOTHING"
)
#: One page of the keys a closing snapshot removes: synced or pending as upsert, absent from
#: it, after the last key of the page before (pages keep memory bounded on huge syncs).
ABSENT_FROM_SNAPSHOT = """
SELECT r.key FROM row_state r
WHERE r.sync_id = ? AND r.key > ?
AND (r.synced_hash IS NOT NULL OR (r.pending = 1 AND r.op = 'upsert'))
AND NOT EXISTS (
  SELECT 1 FROM snapshot_keys k WHERE k.sync_id = r.sync_id AND k.snapshot_id = ? AND k.key = r.key
)
ORDER BY r.key LIMIT ?
"""
ABSENT_PAGE = 5000
#: One page of the keys a truncated source table removes: every key synced or pending as
#: upsert and not already pending as a delete, after the last key of the page before.
HELD_KEYS = """
SELECT r.key FROM row_state r
WHERE r.sync_id = ? AND r.key > ?
AND (r.synced_hash IS NOT NULL OR r.pending = 1) AND NOT (r.pending = 1 AND r.op = 'delete')
ORDER BY r.key LIMIT ?
"""
#: Closing forgets the keys but keeps the snapshot, marked closed, for a while: a closing
#: message read again after a crash must not reopen it with only its own keys.
FORGET_SNAPSHOT_KEYS = "DELETE FROM snapshot_keys WHERE sync_id = ? AND snapshot_id = ?"
CLOSE_SNAPSHOT = "UPDATE snapshots SET closed_at = ? WHERE sync_id = ? AND snapshot_id = ?"
IS_CLOSED = (
    "SELECT 1 FROM snapshots WHERE sync_id = ? AND snapshot_id = ? AND closed_at IS NOT NULL"
)
OPEN_SNAPSHOTS = (
    "SELECT sync_id, snapshot_id, opened_at FROM snapshots WHERE closed_at IS NULL "
    "ORDER BY opened_at"
)

#: A sync's epoch grows by one (Store.sync_epochs): removals were planned for it here.
BUMP_EPOCH = (
    "INSERT INTO sync_epochs (sync_id, epoch) VALUES (?, 1) "
    "ON CONFLICT (sync_id) DO UPDATE SET epoch = sync_epochs.epoch + 1"
)

STORE_REJECTED = "INSERT INTO rejected_rows (sync_id, reason, data, created_at) VALUES (?, ?, ?, ?)"
CLAIM_REJECTED = "UPDATE rejected_rows SET run_id = ? WHERE sync_id = ? AND run_id IS NULL"
LIST_REJECTED = (
    "SELECT sync_id, reason, data, created_at, run_id FROM rejected_rows WHERE sync_id = ? "
    "AND (CAST(? AS TEXT) IS NULL OR sync_id IN (SELECT id FROM syncs WHERE workspace_id = ?)) "
    "ORDER BY id DESC LIMIT ? OFFSET ?"
)


# SQLite ----------------------------------------------------------------------------------
# The hot statements take a whole batch as one JSON array plus concatenated blobs, so SQLite
# runs each as one step in its thread: executemany returns to Python between rows, and each
# return waits for the event loop's thread to hand over the GIL (milliseconds under load).
# SQLite's substr() on a BLOB counts bytes from 1. Seqs come from the transaction's counter.

BLOB = "CASE WHEN j.value->>{n} > 0 THEN substr(?{p}, j.value->>{o}, j.value->>{n}) END"


class Blobs:
    """Byte strings packed into one blob; `add` gives each one's (position, length)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self._at = 1

    def add(self, value: bytes | None) -> tuple[int, int]:
        if not value:
            return 0, 0
        at = self._at
        self.parts.append(value)
        self._at += len(value)
        return at, len(value)

    def blob(self) -> bytes:
        return b"".join(self.parts)


#: New versions from events, ?2 = [[sync_id, key, op, data at, data length, hash at, hash
#: length, emitted_at], ...], ?3 the data, ?4 the hashes; seq ?1 + 1 onwards, in order. A row
#: is left out when it changes nothing (see Store.write_pending); a delete needs a known key.
SQLITE_UPSERT_CHANGED = (
    _INSERT_VERSION
    + "SELECT j.value->>0, j.value->>1, ?1 + 1 + j.key, j.value->>2, "
    + BLOB.format(p=3, o=3, n=4)
    + ", "
    + BLOB.format(p=4, o=5, n=6)
    + ", j.value->>7, 1 FROM json_each(?2) AS j "
    + "WHERE j.value->>2 = 'upsert' OR EXISTS (SELECT 1 FROM row_state r "
    + "WHERE r.sync_id = j.value->>0 AND r.key = j.value->>1) "
    + "ON CONFLICT (sync_id, key) DO UPDATE SET"
    + NEW_VERSION.format(seq="excluded.seq")
    + "WHERE"
    + CHANGES_WHAT_IS_HELD
)
#: Deletes a closing snapshot plans, ?2 = [key, ...] of sync ?3; seq ?1 + 1 onwards.
SQLITE_PLAN_DELETES = (
    _INSERT_VERSION
    + "SELECT ?3, j.value, ?1 + 1 + j.key, 'delete', NULL, NULL, NULL, 1 FROM json_each(?2) AS j "
    + "WHERE 1 ON CONFLICT (sync_id, key) DO UPDATE SET"
    + NEW_VERSION.format(seq="excluded.seq")
)
SQLITE_SNAPSHOT_KEYS = (
    "INSERT INTO snapshot_keys (sync_id, snapshot_id, key) "
    "SELECT j.value->>0, j.value->>1, j.value->>2 FROM json_each(?) AS j WHERE 1 "
    "ON CONFLICT (sync_id, snapshot_id, key) DO NOTHING"
)
#: Full resync: every row the destination holds and that is not pending becomes pending again.
SQLITE_REQUEUE = """
UPDATE row_state SET pending = 1, op = 'upsert', seq = ?1 + r.n, emitted_at = NULL,
  attempts = 0, error = NULL, last_attempt_at = NULL
FROM (
  SELECT key, ROW_NUMBER() OVER (ORDER BY key) AS n FROM row_state
  WHERE sync_id = ?2 AND pending = 0 AND data IS NOT NULL
) AS r
WHERE row_state.sync_id = ?2 AND row_state.key = r.key
"""


class SqliteIngest:
    @staticmethod
    async def write_versions(conn: Conn, rows: Sequence[PendingWrite]) -> int:
        data, hashes = Blobs(), Blobs()
        batch = orjson.dumps(
            [
                (r.sync_id, r.key, r.op, *data.add(r.data), *hashes.add(r.row_hash), r.emitted_at)
                for r in rows
            ]
        )
        kept = await conn.execute(
            SQLITE_UPSERT_CHANGED, conn.seq, batch, data.blob(), hashes.blob()
        )
        conn.seq += len(rows)
        return kept

    @staticmethod
    async def plan_deletes(conn: Conn, sync_id: str, keys: list[str]) -> None:
        await conn.execute(SQLITE_PLAN_DELETES, conn.seq, orjson.dumps(keys), sync_id)
        conn.seq += len(keys)

    @staticmethod
    async def snapshot_keys(conn: Conn, keys: list[tuple[str, str, str]]) -> None:
        await conn.execute(SQLITE_SNAPSHOT_KEYS, orjson.dumps(keys))

    @staticmethod
    async def requeue(conn: Conn, sync_id: str) -> int:
        added = await conn.execute(SQLITE_REQUEUE, conn.seq, sync_id)
        conn.seq += added
        return added


# PostgreSQL ------------------------------------------------------------------------------
# Rows of one statement come from arrays, one round trip per batch. A key written twice in a
# batch is sent once (its last version): ON CONFLICT may not touch a row twice. Seqs come
# from the `pending_seq` sequence, shared by every replica.

_PG_INSERT_VERSION = """
INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, pending)
SELECT t.sync_id, t.key, nextval('pending_seq'), t.op, t.data, t.row_hash, t.emitted_at, 1
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::float8[])
  WITH ORDINALITY AS t(sync_id, key, op, data, row_hash, emitted_at, n)
"""
# `seq = nextval(...)` on conflict rather than excluded.seq: a writer that waited for another
# replica's lock on the row still ends with a seq above the one that replica committed.
_PG_ON_CONFLICT = "ON CONFLICT (sync_id, key) DO UPDATE SET" + NEW_VERSION.format(
    seq="nextval('pending_seq')"
)
POSTGRES_UPSERT_CHANGED = (
    _PG_INSERT_VERSION
    + "WHERE t.op = 'upsert' OR EXISTS "
    + "(SELECT 1 FROM row_state r WHERE r.sync_id = t.sync_id AND r.key = t.key) "
    + "ORDER BY t.n "
    + _PG_ON_CONFLICT
    + "WHERE"
    + CHANGES_WHAT_IS_HELD
)
POSTGRES_PLAN_DELETES = (
    "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, pending) "
    "SELECT $1, t.key, nextval('pending_seq'), 'delete', NULL, NULL, NULL, 1 "
    "FROM unnest($2::text[]) WITH ORDINALITY AS t(key, n) ORDER BY t.n " + _PG_ON_CONFLICT
)
POSTGRES_SNAPSHOT_KEYS = (
    "INSERT INTO snapshot_keys (sync_id, snapshot_id, key) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) "
    "ON CONFLICT (sync_id, snapshot_id, key) DO NOTHING"
)
POSTGRES_REQUEUE = """
UPDATE row_state SET pending = 1, op = 'upsert', seq = nextval('pending_seq'), emitted_at = NULL,
  attempts = 0, error = NULL, last_attempt_at = NULL
WHERE sync_id = $1 AND pending = 0 AND data IS NOT NULL
"""


class PostgresIngest:
    @staticmethod
    async def write_versions(conn: Conn, rows: Sequence[PendingWrite]) -> int:
        latest: dict[tuple[str, str], PendingWrite] = {}
        for row in rows:
            latest.pop((row.sync_id, row.key), None)  # re-inserted last: seq follows the order
            latest[(row.sync_id, row.key)] = row
        batch = list(latest.values())
        return await conn.execute(
            POSTGRES_UPSERT_CHANGED,
            [r.sync_id for r in batch],
            [r.key for r in batch],
            [r.op for r in batch],
            [r.data for r in batch],
            [r.row_hash for r in batch],
            [r.emitted_at for r in batch],
        )

    @staticmethod
    async def plan_deletes(conn: Conn, sync_id: str, keys: list[str]) -> None:
        await conn.execute(POSTGRES_PLAN_DELETES, sync_id, keys)

    @staticmethod
    async def snapshot_keys(conn: Conn, keys: list[tuple[str, str, str]]) -> None:
        sync_ids, snapshot_ids, names = (list(c) for c in zip(*keys, strict=True))
        await conn.execute(POSTGRES_SNAPSHOT_KEYS, sync_ids, snapshot_ids, names)

    @staticmethod
    async def requeue(conn: Conn, sync_id: str) -> int:
        return await conn.execute(POSTGRES_REQUEUE, sync_id)
