"""The embedded SQLite store (single replica): aiosqlite, WAL, one writer at a time."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from service.core.models import Sync, SyncRun, SyncStatus
from service.core.rows import (
    PendingRow,
    PendingWrite,
    RowOutcomes,
    SnapshotProgress,
    SyncedRow,
)
from service.store import sql as shared
from service.store.base import TABLES, CatalogItem, Conflict, T
from service.store.reads import SqlReads
from service.store.schema import SQLITE_MIGRATIONS

_INSERT_VERSION = (
    "INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, pending) "
)
#: A new version of a row, whatever the destination holds (the deletes a snapshot plans).
_UPSERT_PENDING = (
    _INSERT_VERSION
    + "VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (sync_id, key) DO UPDATE SET"
    + shared.NEW_VERSION.format(seq="excluded.seq")
)
# The hot statements take a whole batch as one JSON array plus concatenated blobs, so SQLite
# runs each as one step in its thread: executemany returns to Python between rows, and each
# return waits for the event loop's thread to hand over the GIL (milliseconds under load).
# SQLite's substr() on a BLOB counts bytes from 1.
_BLOB = "CASE WHEN j.value->>{n} > 0 THEN substr(?{p}, j.value->>{o}, j.value->>{n}) END"

#: New versions from events, ?2 = [[sync_id, key, op, data at, data length, hash at, hash
#: length, emitted_at], ...], ?3 the data, ?4 the hashes; seq ?1 + 1 onwards, in order. A row
#: is left out when it changes nothing (see Store.write_pending); a delete needs a known key.
_UPSERT_CHANGED = (
    _INSERT_VERSION
    + "SELECT j.value->>0, j.value->>1, ?1 + 1 + j.key, j.value->>2, "
    + _BLOB.format(p=3, o=3, n=4)
    + ", "
    + _BLOB.format(p=4, o=5, n=6)
    + ", j.value->>7, 1 FROM json_each(?2) AS j "
    + "WHERE j.value->>2 = 'upsert' OR EXISTS (SELECT 1 FROM row_state r "
    + "WHERE r.sync_id = j.value->>0 AND r.key = j.value->>1) "
    + "ON CONFLICT (sync_id, key) DO UPDATE SET"
    + shared.NEW_VERSION.format(seq="excluded.seq")
    + "WHERE"
    + shared.CHANGES_WHAT_IS_HELD
)
#: Versions sent, ?2 = [[key, seq, hash at, hash length], ...], ?3 the hashes: the destination
#: holds them; each leaves pending unless a newer version arrived. Only rows still there.
_SENT = (
    "INSERT INTO row_state (sync_id, key, seq, op, synced_hash, pending) "
    "SELECT ?1, j.value->>0, j.value->>1, 'upsert', "
    + _BLOB.format(p=3, o=2, n=3)
    + ", 0 FROM json_each(?2) AS j "
    "WHERE EXISTS (SELECT 1 FROM row_state r WHERE r.sync_id = ?1 AND r.key = j.value->>0) "
    "ON CONFLICT (sync_id, key) DO UPDATE SET synced_hash = excluded.synced_hash, "
    "pending = CASE WHEN row_state.seq = excluded.seq THEN 0 ELSE row_state.pending END, "
    "attempts = CASE WHEN row_state.seq = excluded.seq THEN 0 ELSE row_state.attempts END, "
    "error = CASE WHEN row_state.seq = excluded.seq THEN NULL ELSE row_state.error END"
)
_SNAPSHOT_KEYS = (
    "INSERT INTO snapshot_keys (sync_id, snapshot_id, key) "
    "SELECT j.value->>0, j.value->>1, j.value->>2 FROM json_each(?) AS j WHERE 1 "
    "ON CONFLICT (sync_id, snapshot_id, key) DO NOTHING"
)


class _Blobs:
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


#: A removal sent: the destination holds nothing; the row goes unless a newer one arrived.
_REMOVED = (
    "UPDATE row_state SET synced_hash = NULL WHERE sync_id = ? AND key = ? AND seq <> ?",
    "DELETE FROM row_state WHERE sync_id = ? AND key = ? AND seq = ?",
)
#: A version that needs no send leaves pending; a row the destination never held goes.
_DROPPED = (
    "DELETE FROM row_state WHERE sync_id = ? AND key = ? AND seq = ? AND synced_hash IS NULL",
    "UPDATE row_state SET pending = 0, attempts = 0, error = NULL "
    "WHERE sync_id = ? AND key = ? AND seq = ?",
)
_FAILED = (
    "UPDATE row_state SET error = ?, attempts = attempts + 1, last_attempt_at = ? "
    "WHERE sync_id = ? AND key = ? AND seq = ? AND pending = 1"
)
#: Full resync: every row the destination holds and that is not pending becomes pending again.
_REQUEUE = """
UPDATE row_state SET pending = 1, op = 'upsert', seq = ?1 + r.n, emitted_at = NULL,
  attempts = 0, error = NULL, last_attempt_at = NULL
FROM (
  SELECT key, ROW_NUMBER() OVER (ORDER BY key) AS n FROM row_state
  WHERE sync_id = ?2 AND pending = 0 AND data IS NOT NULL
) AS r
WHERE row_state.sync_id = ?2 AND row_state.key = r.key
"""


_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_version"


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError("a SQLite URL looks like sqlite:///./sync-service.db")
    path = url[len(prefix) :]
    if not path:
        raise ValueError("the SQLite URL names no file")
    return path


class SqliteStore(SqlReads):
    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._db: aiosqlite.Connection | None = None
        # aiosqlite shares one connection; transactions must not interleave on it.
        self._lock = asyncio.Lock()
        self._seq = 0

    # lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._path != ":memory:":
            await asyncio.to_thread(Path(self._path).parent.mkdir, parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        await self._db.execute("PRAGMA busy_timeout=5000")
        # Rows of a few hundred bytes: larger pages make fewer splits (a new file only).
        await self._db.execute("PRAGMA page_size=16384")
        await self._wal()
        # FULL: a committed ingest transaction survives power loss before offsets are committed.
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._migrate()
        # Every transaction that hands out seqs records the last one here.
        async with self._db.execute("SELECT value FROM meta WHERE name = 'seq'") as cur:
            meta = await cur.fetchone()
        self._seq = meta[0] if meta else 0

    async def _wal(self) -> None:
        """Switch to WAL. SQLite answers "locked" at once, without its busy wait, while another
        process opening the same new file switches too: so wait a little and try again."""
        for attempt in range(50):
            try:
                await self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    async def _migrate(self) -> None:
        db = self._conn
        await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        for version, script in enumerate(SQLITE_MIGRATIONS, start=1):
            await db.execute("BEGIN IMMEDIATE")
            try:
                # Read under the write lock: another process opening the same file at the same
                # time may have applied this version while we waited.
                async with db.execute(_SCHEMA_VERSION) as cur:
                    row = await cur.fetchone()
                if (row[0] if row else 0) >= version:
                    await db.execute("COMMIT")
                    continue
                for statement in script:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                await self._db.close()
            self._db = None

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self._conn
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock, self._conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _pending(
        self, fields: tuple[tuple[str, str], ...], rest: str, params: Sequence[Any]
    ) -> list[PendingRow]:
        # One value for the whole page: a row-by-row fetch returns to Python (and waits for the
        # GIL) after every row.
        rows = await self._rows(shared.json_rows(fields, rest), params)
        kinds = [kind for _, kind in fields]
        hashes = [i for i, kind in enumerate(kinds) if kind == "bytes"]
        found = []
        for values in orjson.loads(rows[0][0]):
            for i in hashes:
                values[i] = bytes.fromhex(values[i]) if values[i] else None
            found.append(PendingRow(*values))
        return found

    async def ping(self) -> bool:
        try:
            await self._rows("SELECT 1")
        except Exception:
            return False
        return True

    # catalog ---------------------------------------------------------------------------

    async def upsert(self, item: CatalogItem) -> None:
        async with self._tx() as db:
            await self._write_item(db, item)

    async def create(self, item: T) -> T:
        table = TABLES[type(item)]
        async with self._tx() as db:
            async with db.execute(
                f"SELECT COALESCE(MAX(CAST(id AS INTEGER)), 0) FROM {table}"
            ) as cur:
                row = await cur.fetchone()
            created = item.model_copy(update={"id": str((row[0] if row else 0) + 1)})
            await self._write_item(db, created)
        return created

    async def _write_item(self, db: aiosqlite.Connection, item: CatalogItem) -> None:
        table = TABLES[type(item)]
        values = shared.catalog_columns(item)
        columns = list(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        try:
            await db.execute(sql, list(values.values()))
        except sqlite3.IntegrityError as exc:
            raise Conflict("slug", f"slug {item.slug!r} is already used in this workspace") from exc
        if isinstance(item, Sync):
            await db.execute(shared.SYNC_STATUS_AFTER_WRITE, (item.disabled, item.id))
        await db.execute("UPDATE meta SET value = value + 1 WHERE name = 'catalog_version'")

    async def delete(self, kind: type[CatalogItem], item_id: str, workspace_id: str) -> bool:
        table = TABLES[kind]
        async with self._tx() as db:
            async with db.execute(
                f"SELECT 1 FROM {table} WHERE id = ? AND workspace_id = ?", (item_id, workspace_id)
            ) as cur:
                if await cur.fetchone() is None:
                    return False  # another workspace's item is not even there to conflict
            for check, field, what in shared.REFERENCE_CHECKS.get(kind, ()):
                async with db.execute(check, (item_id,)) as cur:
                    used = await cur.fetchone()
                if used:
                    raise Conflict(field, f"{what} {used[0]} still uses it")
            cur = await db.execute(
                f"DELETE FROM {table} WHERE id = ? AND workspace_id = ?", (item_id, workspace_id)
            )
            if cur.rowcount == 0:
                return False
            if kind is Sync:
                for child in ("row_state", "sync_runs"):
                    await db.execute(f"DELETE FROM {child} WHERE sync_id = ?", (item_id,))
            await db.execute("UPDATE meta SET value = value + 1 WHERE name = 'catalog_version'")
        return True

    async def set_sync_status(
        self, sync_id: str, status: SyncStatus, last_run_at: datetime | None = None
    ) -> None:
        async with self._tx() as db:
            if last_run_at is None:
                await db.execute("UPDATE syncs SET status = ? WHERE id = ?", (status, sync_id))
            else:
                await db.execute(
                    "UPDATE syncs SET status = ?, last_run_at = ? WHERE id = ?",
                    (status, last_run_at.isoformat(), sync_id),
                )

    # rows ------------------------------------------------------------------------------

    async def write_pending(
        self, rows: Sequence[PendingWrite], snapshot: SnapshotProgress | None = None
    ) -> int:
        if not rows and not snapshot:
            return 0
        kept = 0
        data, hashes = _Blobs(), _Blobs()
        batch = orjson.dumps(
            [
                (r.sync_id, r.key, r.op, *data.add(r.data), *hashes.add(r.row_hash), r.emitted_at)
                for r in rows
            ]
        )
        async with self._tx() as db:
            seq = self._seq
            if rows:
                cur = await db.execute(_UPSERT_CHANGED, (seq, batch, data.blob(), hashes.blob()))
                kept = max(cur.rowcount, 0)
                seq += len(rows)
            if snapshot:
                seq = await self._snapshot(db, snapshot, seq)
            await db.execute("UPDATE meta SET value = ? WHERE name = 'seq'", (seq,))
            # Only advance once the transaction is certain to commit.
            self._seq = seq
        return kept

    async def _snapshot(
        self, db: aiosqlite.Connection, snapshot: SnapshotProgress, seq: int
    ) -> int:
        now = time.time()
        if snapshot.rejected:
            await db.executemany(
                shared.STORE_REJECTED,
                [(r.sync_id, r.reason, r.data, now) for r in snapshot.rejected],
            )
        done = set()
        for pair in snapshot.snapshots():
            async with db.execute(shared.IS_CLOSED, pair) as cur:
                if await cur.fetchone():
                    done.add(pair)
        snapshot = snapshot.without(done)
        opened = snapshot.snapshots()
        await db.executemany(shared.OPEN_SNAPSHOT, [(s, n, now) for s, n in sorted(opened)])
        if snapshot.keys:
            await db.execute(_SNAPSHOT_KEYS, (orjson.dumps(snapshot.keys),))
        for sync_id, snap in snapshot.closed:
            async with db.execute(shared.ABSENT_FROM_SNAPSHOT, (sync_id, snap)) as cur:
                absent = [r[0] for r in await cur.fetchall()]
            deletes = [
                (sync_id, key, seq + 1 + i, "delete", None, None, None)
                for i, key in enumerate(absent)
            ]
            seq += len(deletes)
            await db.executemany(_UPSERT_PENDING, deletes)
            for statement, stamped in shared.CLOSE_SNAPSHOT:
                await db.execute(statement, (now, sync_id, snap) if stamped else (sync_id, snap))
        if snapshot.closed:
            cutoff = now - shared.CLOSED_SNAPSHOT_RETENTION_SECONDS
            await db.execute(shared.PRUNE_SNAPSHOTS, (cutoff,))
        return seq

    async def claim_rejected(self, sync_id: str, run_id: str) -> int:
        async with self._tx() as db:
            cur = await db.execute(shared.CLAIM_REJECTED, (run_id, sync_id))
            await db.execute(
                shared.PRUNE_REJECTED, (time.time() - shared.REJECTED_RETENTION_SECONDS,)
            )
        return max(cur.rowcount, 0)

    async def requeue_synced(self, sync_id: str) -> int:
        async with self._tx() as db:
            cur = await db.execute(_REQUEUE, (self._seq, sync_id))
            added = max(cur.rowcount, 0)
            await db.execute("UPDATE meta SET value = ? WHERE name = 'seq'", (self._seq + added,))
            self._seq += added
        return added

    async def synced_rows(self, sync_id: str, keys: Sequence[str]) -> dict[str, SyncedRow]:
        rows = await self._rows(
            "SELECT key, synced_hash, data FROM row_state WHERE sync_id = ? "
            "AND synced_hash IS NOT NULL AND key IN (SELECT value FROM json_each(?))",
            (sync_id, orjson.dumps(list(keys))),
        )
        return {key: SyncedRow(key, row_hash, source) for key, row_hash, source in rows}

    async def record_outcomes(self, sync_id: str, outcomes: RowOutcomes, now: float) -> None:
        if not outcomes:
            return
        hashes = _Blobs()
        sent = []
        removed = []
        for r in outcomes.delivered:
            if r.op == "removed":
                removed.append((sync_id, r.key, r.seq))
            else:
                sent.append((r.key, r.seq, *hashes.add(r.row_hash)))
        dropped = [(sync_id, key, seq) for key, seq in outcomes.dropped]
        async with self._tx() as db:
            if sent:
                await db.execute(_SENT, (sync_id, orjson.dumps(sent), hashes.blob()))
            for statement in _REMOVED if removed else ():
                await db.executemany(statement, removed)
            for statement in _DROPPED if dropped else ():
                await db.executemany(statement, dropped)
            if outcomes.failed:
                await db.executemany(
                    _FAILED, [(f.error, now, sync_id, f.key, f.seq) for f in outcomes.failed]
                )

    # runs ------------------------------------------------------------------------------

    async def acquire_lease(self, sync_id: str, owner: str, seconds: float) -> bool:
        now = time.time()
        async with self._tx() as db:
            cur = await db.execute(shared.ACQUIRE_LEASE, (sync_id, owner, now + seconds, now))
            return cur.rowcount > 0

    async def release_lease(self, sync_id: str, owner: str) -> None:
        async with self._tx() as db:
            await db.execute(shared.RELEASE_LEASE, (sync_id, owner))

    async def next_run_id(self) -> str:
        async with self._tx() as db:
            await db.execute("UPDATE meta SET value = value + 1 WHERE name = 'run_id'")
            async with db.execute("SELECT value FROM meta WHERE name = 'run_id'") as cur:
                row = await cur.fetchone()
        assert row is not None
        return str(row[0])

    async def save_run(self, run: SyncRun) -> None:
        async with self._tx() as db:
            await db.execute(shared.SAVE_RUN, shared.run_columns(run))
