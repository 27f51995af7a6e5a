"""The streamed path's SQL: what the store holds for a batch of keys, and the outcomes of rows
sent straight from ingest (never written as pending). Written per dialect, side by side: one
statement per kind of row whatever the batch size (SQLite adds one read of the keys it left
pending, as it has no writable CTE to return them from)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from service.core.rows import MAYBE_HELD, ROW_HASH_BYTES, PendingWrite
from service.store.conn import Conn, SqliteConn
from service.store.sql.ingest import BLOB

#: What a delivered version sets on a known key. A key another writer made pending meanwhile
#: (a full resync, a snapshot's planned delete) stays pending with this version under a new
#: seq (`{seq}`): the runner sends it again, and its own older send, recorded later with the
#: old seq, does not clear it.
_DELIVERED_ON_KNOWN = """
  seq = CASE WHEN row_state.pending = 1 THEN {seq} ELSE row_state.seq END,
  op = 'upsert', data = excluded.data, row_hash = excluded.row_hash,
  emitted_at = excluded.emitted_at, synced_hash = excluded.synced_hash,
  attempts = 0, error = NULL, last_attempt_at = NULL
"""
#: A failed version becomes the key's pending one (new seq), whatever was pending before; so
#: does a removal kept pending (failed, or never sent), which keeps the source columns it sends
#: and takes the destination to hold a version unless the store knows which (MAYBE_HELD).
_FAILED_ON_KNOWN = """
  seq = {seq}, op = excluded.op, data = excluded.data, row_hash = excluded.row_hash,
  emitted_at = excluded.emitted_at, pending = 1, error = excluded.error,
  attempts = row_state.attempts + excluded.attempts, last_attempt_at = excluded.last_attempt_at,
  synced_hash = COALESCE(row_state.synced_hash, excluded.synced_hash)
"""
_INSERT_DELIVERED = (
    "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, synced_hash, "
    "pending) "
)
_INSERT_FAILED = (
    "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, attempts, error, "
    "last_attempt_at, pending, synced_hash) "
)


def check_streamed(
    sync_id: str,
    delivered: Sequence[PendingWrite],
    failed: Sequence[tuple[PendingWrite, str | None]],
) -> None:
    """Raise ValueError on a batch the statements cannot take: a row of another sync, a
    delivered row that is not an upsert with data and a hash of ROW_HASH_BYTES, a row kept
    pending that is neither an upsert with data and a hash nor a removal with the source
    columns it sends (and no hash), or a key twice (one statement may touch a row once)."""
    for row in delivered:
        if (
            row.sync_id != sync_id
            or row.op != "upsert"
            or not row.data
            or len(row.row_hash or b"") != ROW_HASH_BYTES
        ):
            raise ValueError(
                f"delivered streamed row {row.key!r} of sync {row.sync_id} is not an upsert of "
                f"sync {sync_id} with data and a hash of {ROW_HASH_BYTES} bytes"
            )
    for row, _ in failed:
        if row.sync_id != sync_id:
            raise ValueError(f"a streamed row of sync {row.sync_id} recorded for sync {sync_id}")
        if not row.data or (row.op == "upsert") != bool(row.row_hash):
            raise ValueError(
                f"streamed row {row.key!r} is neither an upsert with data and a hash nor a "
                "removal with its source columns"
            )
    keys = {row.key for row in delivered}
    keys.update(row.key for row, _ in failed)
    if len(keys) != len(delivered) + len(failed):
        raise ValueError("a key appears more than once among the streamed outcomes")


# SQLite ----------------------------------------------------------------------------------
# Batches travel as one JSON array plus concatenated blobs and reads come back as one JSON
# value: SQLite's thread then returns to Python (and waits for the GIL) once per statement,
# not once per row. Seqs come from the transaction's counter.

#: (synced hash as hex, pending) of the held keys among ?2, a JSON array of keys of sync ?1.
SQLITE_HELD = (
    "SELECT json_group_array(json_array(key, hex(synced_hash), pending)) FROM row_state "
    "WHERE sync_id = ?1 AND key IN (SELECT value FROM json_each(?2))"
)
#: [key, synced hash as hex] of up to ?3 keys of sync ?1 after ?2 in key order, none pending.
SQLITE_SETTLED_PAGE = (
    "SELECT json_group_array(json_array(key, hex(synced_hash))) FROM (SELECT key, synced_hash "
    "FROM row_state WHERE sync_id = ?1 AND key > ?2 AND pending = 0 ORDER BY key LIMIT ?3)"
)
SQLITE_PENDING_AMONG = (
    "SELECT json_group_array(key) FROM row_state "
    "WHERE sync_id = ?1 AND pending = 1 AND key IN (SELECT value FROM json_each(?2))"
)
#: Which of the syncs ?1 (a JSON array) have a pending row: one probe each of the partial
#: index on pending rows, never a count.
SQLITE_SYNCS_WITH_PENDING = (
    "SELECT json_group_array(j.value) FROM json_each(?1) AS j WHERE EXISTS "
    "(SELECT 1 FROM row_state r WHERE r.sync_id = j.value AND r.pending = 1)"
)
SQLITE_SYNC_EPOCHS = (
    "SELECT json_group_array(json_array(sync_id, epoch)) FROM sync_epochs "
    "WHERE sync_id IN (SELECT value FROM json_each(?1))"
)
#: Delivered versions of sync ?1, ?3 = [[key, data at, data length, emitted_at], ...], ?4 the
#: data, ?5 the hashes (ROW_HASH_BYTES each, in order); seq ?2 + 1 onwards, in order. Each
#: `->>` parses the row's array again (SQLite keeps no parse before 3.45), so the hash is found
#: by its place and nothing is read twice: 4.9 us a row against 7.5 with the general form.
SQLITE_DELIVERED = (
    _INSERT_DELIVERED
    + "SELECT ?1, j.value->>0, ?2 + 1 + j.key, 'upsert', substr(?4, j.value->>1, j.value->>2), "
    + f"substr(?5, 1 + {ROW_HASH_BYTES} * j.key, {ROW_HASH_BYTES}), j.value->>3, "
    + f"substr(?5, 1 + {ROW_HASH_BYTES} * j.key, {ROW_HASH_BYTES}), 0 "
    + "FROM json_each(?3) AS j WHERE 1 ON CONFLICT (sync_id, key) DO UPDATE SET"
    + _DELIVERED_ON_KNOWN.format(seq="excluded.seq")
)
#: Versions kept pending like SQLITE_DELIVERED, each [..., error, op] at 6 and 7 (no error: a
#: removal never sent, no attempt); ?6 the time of the attempt, ?7 MAYBE_HELD.
SQLITE_FAILED = (
    _INSERT_FAILED
    + "SELECT ?1, j.value->>0, ?2 + 1 + j.key, j.value->>7, "
    + BLOB.format(p=4, o=1, n=2)
    + ", "
    + BLOB.format(p=5, o=3, n=4)
    + ", j.value->>5, j.value->>6 IS NOT NULL, j.value->>6, "
    + "CASE WHEN j.value->>6 IS NOT NULL THEN ?6 END, 1, "
    + "CASE WHEN j.value->>7 = 'delete' THEN ?7 END FROM json_each(?3) AS j "
    + "WHERE 1 ON CONFLICT (sync_id, key) DO UPDATE SET"
    + _FAILED_ON_KNOWN.format(seq="excluded.seq")
)
#: Keys of sync ?1 left pending with a seq in (?2, ?3]: one writer at a time holds SQLite, so
#: the seqs a transaction handed out are its own, and the partial index finds just those rows.
SQLITE_PENDING_IN = (
    "SELECT json_group_array(key) FROM row_state "
    "WHERE sync_id = ?1 AND pending = 1 AND seq > ?2 AND seq <= ?3"
)


def _delivered_batch(rows: Sequence[PendingWrite]) -> list[bytes]:
    """The JSON array and the two blobs of SQLITE_DELIVERED and POSTGRES_DELIVERED: [key,
    data at (from 1), data length, emitted_at] a row, the rows' data, and their hashes of
    ROW_HASH_BYTES each, in order. Three values whatever the batch's size, where arrays of
    each column cost the client a type check per element."""
    batch = []
    data_at = 1
    for r in rows:
        data_len = len(r.data)  # type: ignore[arg-type]
        batch.append((r.key, data_at, data_len, r.emitted_at))
        data_at += data_len
    data = b"".join([r.data for r in rows])  # type: ignore[misc]
    hashes = b"".join([r.row_hash for r in rows])  # type: ignore[misc]
    return [orjson.dumps(batch), data, hashes]


def _sqlite_batch(rows: Sequence[tuple[PendingWrite, str | None]]) -> list[bytes]:
    """The JSON array and the two blobs of SQLITE_FAILED."""
    # Blobs.add, inline: every row has data, and every upsert a hash (check_streamed).
    batch = []
    data_at = hash_at = 1
    for r, error in rows:
        data_len, hash_len = len(r.data), len(r.row_hash or b"")  # type: ignore[arg-type]
        batch.append((r.key, data_at, data_len, hash_at, hash_len, r.emitted_at, error, r.op))
        data_at += data_len
        hash_at += hash_len
    data = b"".join([r.data for r, _ in rows])  # type: ignore[misc]
    hashes = b"".join([r.row_hash or b"" for r, _ in rows])
    return [orjson.dumps(batch), data, hashes]


class SqliteStreamed:
    @staticmethod
    async def held(
        conn: Conn, sync_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[bytes | None, bool]]:
        found = await conn.fetchval(SQLITE_HELD, sync_id, orjson.dumps(list(keys)))
        return {
            key: (bytes.fromhex(synced) if synced else None, bool(pending))
            for key, synced, pending in orjson.loads(found)
        }

    @staticmethod
    async def settled_page(
        conn: Conn, sync_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes | None]]:
        found = await conn.fetchval(SQLITE_SETTLED_PAGE, sync_id, after, limit)
        return [
            (key, bytes.fromhex(synced) if synced else None) for key, synced in orjson.loads(found)
        ]

    @staticmethod
    async def pending_among(conn: Conn, sync_id: str, keys: Sequence[str]) -> set[str]:
        found = await conn.fetchval(SQLITE_PENDING_AMONG, sync_id, orjson.dumps(list(keys)))
        return set(orjson.loads(found))

    @staticmethod
    async def syncs_with_pending(conn: Conn, sync_ids: Sequence[str]) -> set[str]:
        found = await conn.fetchval(SQLITE_SYNCS_WITH_PENDING, orjson.dumps(list(sync_ids)))
        return set(orjson.loads(found))

    @staticmethod
    async def sync_epochs(conn: Conn, sync_ids: Sequence[str]) -> dict[str, int]:
        found = await conn.fetchval(SQLITE_SYNC_EPOCHS, orjson.dumps(list(sync_ids)))
        return dict(orjson.loads(found))

    @staticmethod
    async def record(
        conn: Conn,
        sync_id: str,
        delivered: Sequence[PendingWrite],
        failed: Sequence[tuple[PendingWrite, str | None]],
        now: float,
    ) -> list[str]:
        assert isinstance(conn, SqliteConn)
        first = conn.seq
        statements: list[tuple[str, Sequence[Any]]] = []
        if delivered:
            batch = _delivered_batch(delivered)
            statements.append((SQLITE_DELIVERED, (sync_id, first, *batch)))
            conn.seq += len(delivered)
            statements.append((SQLITE_PENDING_IN, (sync_id, first, conn.seq)))
        if failed:
            batch = _sqlite_batch(failed)
            statements.append((SQLITE_FAILED, (sync_id, conn.seq, *batch, now, MAYBE_HELD)))
            conn.seq += len(failed)
        # One trip to SQLite's thread for the whole batch (the transaction's BEGIN with it).
        found = await conn.fetch_each(statements)
        pending: list[str] = orjson.loads(found[1][0][0]) if delivered else []
        pending.extend(row.key for row, _ in failed)
        return pending


# PostgreSQL ------------------------------------------------------------------------------
# Batches travel as arrays, one round trip per statement. Seqs come from `pending_seq`; a key
# found pending takes nextval() on conflict, so a writer that waited for another replica's
# lock on the row still ends with a seq above the one that replica committed.

#: Keys joined from an array, so each is one probe of the primary key's index (`key = ANY(..)`
#: lets the planner scan the sync's rows instead, hundreds of times slower on a large sync).
POSTGRES_HELD = (
    "SELECT r.key, r.synced_hash, r.pending FROM unnest($2::text[]) AS k(key) "
    "JOIN row_state r ON r.sync_id = $1 AND r.key = k.key"
)
POSTGRES_SETTLED_PAGE = (
    "SELECT key, synced_hash FROM row_state WHERE sync_id = $1 AND key > $2 AND pending = 0 "
    "ORDER BY key LIMIT $3"
)
POSTGRES_PENDING_AMONG = (
    "SELECT r.key FROM unnest($2::text[]) AS k(key) "
    "JOIN row_state r ON r.sync_id = $1 AND r.key = k.key WHERE r.pending = 1"
)
POSTGRES_SYNCS_WITH_PENDING = (
    "SELECT s.id FROM unnest($1::text[]) AS s(id) WHERE EXISTS "
    "(SELECT 1 FROM row_state r WHERE r.sync_id = s.id AND r.pending = 1)"
)
POSTGRES_SYNC_EPOCHS = (
    "SELECT e.sync_id, e.epoch FROM unnest($1::text[]) AS s(id) "
    "JOIN sync_epochs e ON e.sync_id = s.id"
)
#: The hash of row j.n (from 1) in the hashes of `_delivered_batch`.
_POSTGRES_NTH_HASH = (
    f"substring($4::bytea from {ROW_HASH_BYTES} * (j.n::int - 1) + 1 for {ROW_HASH_BYTES})"
)
#: Delivered versions, from `_delivered_batch` ($2, $3, $4); returns the keys found pending (a
#: delivered row never turns pending). A key new to the store is settled at once, so its seq is
#: 0 (as the settled rows version 7 of the schema moved in): seqs order pending versions only,
#: and the sequence costs a lock and a write per call.
POSTGRES_DELIVERED = (
    "WITH done AS ("
    + _INSERT_DELIVERED
    + "SELECT $1, j.value->>0, 0, 'upsert', "
    + "substring($3::bytea from (j.value->>1)::int for (j.value->>2)::int), "
    + f"{_POSTGRES_NTH_HASH}, (j.value->>3)::float8, {_POSTGRES_NTH_HASH}, 0 "
    + "FROM json_array_elements($2::text::json) WITH ORDINALITY AS j(value, n) "
    + "ON CONFLICT (sync_id, key) DO UPDATE SET"
    + _DELIVERED_ON_KNOWN.format(seq="nextval('pending_seq')")
    + "RETURNING key, pending) SELECT key FROM done WHERE pending = 1"
)
#: Versions kept pending (SQLITE_FAILED); $2 the time of the attempt, $8 MAYBE_HELD.
POSTGRES_FAILED = (
    _INSERT_FAILED
    + "SELECT $1, t.key, nextval('pending_seq'), t.op, t.data, t.row_hash, t.emitted_at, "
    + "(t.error IS NOT NULL)::int, t.error, CASE WHEN t.error IS NOT NULL THEN $2::float8 END, "
    + "1, CASE WHEN t.op = 'delete' THEN $8::bytea END "
    + "FROM unnest($3::text[], $4::bytea[], $5::bytea[], $6::float8[], $7::text[], $9::text[]) "
    + "AS t(key, data, row_hash, emitted_at, error, op) "
    + "ON CONFLICT (sync_id, key) DO UPDATE SET"
    + _FAILED_ON_KNOWN.format(seq="nextval('pending_seq')")
)


class PostgresStreamed:
    @staticmethod
    async def held(
        conn: Conn, sync_id: str, keys: Sequence[str]
    ) -> dict[str, tuple[bytes | None, bool]]:
        rows = await conn.fetch(POSTGRES_HELD, sync_id, list(keys))
        return {key: (synced, bool(pending)) for key, synced, pending in rows}

    @staticmethod
    async def settled_page(
        conn: Conn, sync_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes | None]]:
        return [tuple(r) for r in await conn.fetch(POSTGRES_SETTLED_PAGE, sync_id, after, limit)]

    @staticmethod
    async def pending_among(conn: Conn, sync_id: str, keys: Sequence[str]) -> set[str]:
        return {r[0] for r in await conn.fetch(POSTGRES_PENDING_AMONG, sync_id, list(keys))}

    @staticmethod
    async def syncs_with_pending(conn: Conn, sync_ids: Sequence[str]) -> set[str]:
        return {r[0] for r in await conn.fetch(POSTGRES_SYNCS_WITH_PENDING, list(sync_ids))}

    @staticmethod
    async def sync_epochs(conn: Conn, sync_ids: Sequence[str]) -> dict[str, int]:
        return {r[0]: r[1] for r in await conn.fetch(POSTGRES_SYNC_EPOCHS, list(sync_ids))}

    @staticmethod
    async def record(
        conn: Conn,
        sync_id: str,
        delivered: Sequence[PendingWrite],
        failed: Sequence[tuple[PendingWrite, str | None]],
        now: float,
    ) -> list[str]:
        pending: list[str] = []
        if delivered:
            batch, data, hashes = _delivered_batch(delivered)
            found = await conn.fetch(POSTGRES_DELIVERED, sync_id, batch.decode(), data, hashes)
            pending.extend(r[0] for r in found)
        if failed:
            await conn.execute(
                POSTGRES_FAILED,
                sync_id,
                now,
                [r.key for r, _ in failed],
                [r.data for r, _ in failed],
                [r.row_hash for r, _ in failed],
                [r.emitted_at for r, _ in failed],
                [error for _, error in failed],
                MAYBE_HELD,
                [r.op for r, _ in failed],
            )
            pending.extend(r.key for r, _ in failed)
        return pending
