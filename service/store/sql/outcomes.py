"""Outcomes of a run's sends: delivered rows become synced, failed ones keep their error,
dropped ones leave pending. Written per dialect (SQLite packs a batch into one JSON value,
PostgreSQL into arrays), side by side; each only touches a row whose seq is the one sent."""

from __future__ import annotations

import orjson

from service.core.rows import RowOutcomes
from service.store.conn import Conn
from service.store.sql.ingest import BLOB, Blobs

# SQLite ----------------------------------------------------------------------------------

#: Versions sent, ?2 = [[key, seq, hash at, hash length], ...], ?3 the hashes: the destination
#: holds them; each leaves pending unless a newer version arrived. Only rows still there.
SQLITE_SENT = (
    "INSERT INTO row_state (sync_id, key, seq, op, synced_hash, pending) "
    "SELECT ?1, j.value->>0, j.value->>1, 'upsert', "
    + BLOB.format(p=3, o=2, n=3)
    + ", 0 FROM json_each(?2) AS j "
    "WHERE EXISTS (SELECT 1 FROM row_state r WHERE r.sync_id = ?1 AND r.key = j.value->>0) "
    "ON CONFLICT (sync_id, key) DO UPDATE SET synced_hash = excluded.synced_hash, "
    "pending = CASE WHEN row_state.seq = excluded.seq THEN 0 ELSE row_state.pending END, "
    "attempts = CASE WHEN row_state.seq = excluded.seq THEN 0 ELSE row_state.attempts END, "
    "error = CASE WHEN row_state.seq = excluded.seq THEN NULL ELSE row_state.error END"
)
#: A removal sent: the destination holds nothing; the row goes unless a newer one arrived.
SQLITE_REMOVED = (
    "UPDATE row_state SET synced_hash = NULL WHERE sync_id = ? AND key = ? AND seq <> ?",
    "DELETE FROM row_state WHERE sync_id = ? AND key = ? AND seq = ?",
)
#: A version that needs no send leaves pending; a row the destination never held goes.
SQLITE_DROPPED = (
    "DELETE FROM row_state WHERE sync_id = ? AND key = ? AND seq = ? AND synced_hash IS NULL",
    "UPDATE row_state SET pending = 0, attempts = 0, error = NULL "
    "WHERE sync_id = ? AND key = ? AND seq = ?",
)
SQLITE_FAILED = (
    "UPDATE row_state SET error = ?, attempts = attempts + 1, last_attempt_at = ? "
    "WHERE sync_id = ? AND key = ? AND seq = ? AND pending = 1"
)


class SqliteOutcomes:
    @staticmethod
    async def record(conn: Conn, sync_id: str, outcomes: RowOutcomes, now: float) -> None:
        hashes = Blobs()
        sent = []
        removed = []
        for r in outcomes.delivered:
            if r.op == "removed":
                removed.append((sync_id, r.key, r.seq))
            else:
                sent.append((r.key, r.seq, *hashes.add(r.row_hash)))
        dropped = [(sync_id, key, seq) for key, seq in outcomes.dropped]
        if sent:
            await conn.execute(SQLITE_SENT, sync_id, orjson.dumps(sent), hashes.blob())
        for statement in SQLITE_REMOVED if removed else ():
            await conn.executemany(statement, removed)
        for statement in SQLITE_DROPPED if dropped else ():
            await conn.executemany(statement, dropped)
        if outcomes.failed:
            await conn.executemany(
                SQLITE_FAILED, [(f.error, now, sync_id, f.key, f.seq) for f in outcomes.failed]
            )


# PostgreSQL ------------------------------------------------------------------------------

#: A version sent: the destination holds it; it leaves pending unless a newer one arrived.
POSTGRES_SENT = """
UPDATE row_state AS r SET synced_hash = d.row_hash,
  pending = CASE WHEN r.seq = d.seq THEN 0 ELSE r.pending END,
  attempts = CASE WHEN r.seq = d.seq THEN 0 ELSE r.attempts END,
  error = CASE WHEN r.seq = d.seq THEN NULL ELSE r.error END
FROM unnest($2::text[], $3::bytea[], $4::bigint[]) AS d(key, row_hash, seq)
WHERE r.sync_id = $1 AND r.key = d.key
"""
#: (key, seq) pairs of one sync ($1 the sync, $2 keys, $3 seqs), each matched to its row `r`.
_KEYS_SEQS = "unnest($2::text[], $3::bigint[]) AS d(key, seq)"
_OF_SYNC = "r.sync_id = $1 AND r.key = d.key"
POSTGRES_REMOVED = (
    f"UPDATE row_state AS r SET synced_hash = NULL FROM {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq <> d.seq",
    f"DELETE FROM row_state AS r USING {_KEYS_SEQS} WHERE {_OF_SYNC} AND r.seq = d.seq",
)
POSTGRES_DROPPED = (
    f"DELETE FROM row_state AS r USING {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq = d.seq AND r.synced_hash IS NULL",
    f"UPDATE row_state AS r SET pending = 0, attempts = 0, error = NULL FROM {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq = d.seq",
)
POSTGRES_FAILED = """
UPDATE row_state AS r
SET error = f.error, attempts = r.attempts + 1, last_attempt_at = $2
FROM unnest($3::text[], $4::bigint[], $5::text[]) AS f(key, seq, error)
WHERE r.sync_id = $1 AND r.key = f.key AND r.seq = f.seq AND r.pending = 1
"""


class PostgresOutcomes:
    @staticmethod
    async def record(conn: Conn, sync_id: str, outcomes: RowOutcomes, now: float) -> None:
        # UPDATE ... FROM touches a row once: the last outcome of a key wins.
        sent = {r.key: r for r in outcomes.delivered if r.op != "removed"}
        removed = {r.key: r.seq for r in outcomes.delivered if r.op == "removed"}
        dropped = dict(outcomes.dropped)
        if sent:
            await conn.execute(
                POSTGRES_SENT,
                sync_id,
                list(sent),
                [r.row_hash for r in sent.values()],
                [r.seq for r in sent.values()],
            )
        for statement in POSTGRES_REMOVED if removed else ():
            await conn.execute(statement, sync_id, list(removed), list(removed.values()))
        for statement in POSTGRES_DROPPED if dropped else ():
            await conn.execute(statement, sync_id, list(dropped), list(dropped.values()))
        if outcomes.failed:
            await conn.execute(
                POSTGRES_FAILED,
                sync_id,
                now,
                [f.key for f in outcomes.failed],
                [f.seq for f in outcomes.failed],
                [f.error for f in outcomes.failed],
            )
