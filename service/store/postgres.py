"""The PostgreSQL store: asyncpg, a connection pool, one transaction per method.

Several replicas may share one database: pending-row `seq` and run ids come from sequences,
`create` locks the table it picks the next id from, slugs are unique by constraint, migrations
run under an advisory lock. The URL's password never appears in a log line or an error.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from service.core.models import Destination, Model, Source, Sync, SyncRun, SyncStatus
from service.core.rows import (
    PendingWrite,
    RowOutcomes,
    SnapshotProgress,
    SyncedRow,
)
from service.store import sql as shared
from service.store.base import TABLES, CatalogItem, Conflict, T
from service.store.pgconnect import create_pool, mask_url
from service.store.reads import SqlReads
from service.store.schema import POSTGRES_MIGRATIONS

log = logging.getLogger(__name__)

#: pg_advisory_lock key held while migrating ("syncsvc" + 1), so replicas starting together
#: apply each migration once.
MIGRATION_LOCK = int.from_bytes(b"syncsvc\x01", "big")

_PING_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 5.0

#: Per kind: the table whose rows may refer to it (see shared.REFERENCE_CHECKS).
_REFERRERS: dict[type[CatalogItem], str] = {
    Model: "syncs",
    Destination: "syncs",
    Source: "models",
}

# Rows of one statement come from arrays, one round trip per batch. A key written twice in a
# batch is sent once (its last version): ON CONFLICT may not touch a row twice.
_INSERT_VERSION = """
INSERT INTO row_state (sync_id, key, seq, op, data, row_hash, emitted_at, pending)
SELECT t.sync_id, t.key, nextval('pending_seq'), t.op, t.data, t.row_hash, t.emitted_at, 1
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::float8[])
  WITH ORDINALITY AS t(sync_id, key, op, data, row_hash, emitted_at, n)
"""
# `seq = nextval(...)` on conflict rather than excluded.seq: a writer that waited for another
# replica's lock on the row still ends with a seq above the one that replica committed.
_ON_CONFLICT = "ON CONFLICT (sync_id, key) DO UPDATE SET" + shared.NEW_VERSION.format(
    seq="nextval('pending_seq')"
)
#: A new version of a row, whatever the destination holds (the deletes a snapshot plans).
_UPSERT_PENDING = _INSERT_VERSION + "ORDER BY t.n " + _ON_CONFLICT
#: A new version from an event: left out when it changes nothing (see Store.write_pending).
_UPSERT_CHANGED = (
    _INSERT_VERSION
    + "WHERE t.op = 'upsert' OR EXISTS "
    + "(SELECT 1 FROM row_state r WHERE r.sync_id = t.sync_id AND r.key = t.key) "
    + "ORDER BY t.n "
    + _ON_CONFLICT
    + "WHERE"
    + shared.CHANGES_WHAT_IS_HELD
)

#: A version sent: the destination holds it; it leaves pending unless a newer one arrived.
_SENT = """
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
#: A removal sent: the destination holds nothing; the row goes unless a newer one arrived.
_REMOVED = (
    f"UPDATE row_state AS r SET synced_hash = NULL FROM {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq <> d.seq",
    f"DELETE FROM row_state AS r USING {_KEYS_SEQS} WHERE {_OF_SYNC} AND r.seq = d.seq",
)
#: A version that needs no send leaves pending; a row the destination never held goes.
_DROPPED = (
    f"DELETE FROM row_state AS r USING {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq = d.seq AND r.synced_hash IS NULL",
    f"UPDATE row_state AS r SET pending = 0, attempts = 0, error = NULL FROM {_KEYS_SEQS} "
    f"WHERE {_OF_SYNC} AND r.seq = d.seq",
)
_FAILED = """
UPDATE row_state AS r
SET error = f.error, attempts = r.attempts + 1, last_attempt_at = $2
FROM unnest($3::text[], $4::bigint[], $5::text[]) AS f(key, seq, error)
WHERE r.sync_id = $1 AND r.key = f.key AND r.seq = f.seq AND r.pending = 1
"""
#: Full resync: every row the destination holds and that is not pending becomes pending again.
_REQUEUE = """
UPDATE row_state SET pending = 1, op = 'upsert', seq = nextval('pending_seq'), emitted_at = NULL,
  attempts = 0, error = NULL, last_attempt_at = NULL
WHERE sync_id = $1 AND pending = 0 AND data IS NOT NULL
"""

_BUMP_CATALOG = "UPDATE meta SET value = value + 1 WHERE name = 'catalog_version'"

_PLACEHOLDER = re.compile(r"\?")


def _count(status: str) -> int:
    """The row count of a command status such as `INSERT 0 12` or `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


@functools.lru_cache(maxsize=256)
def pg(sql: str) -> str:
    """The shared `?`-placeholder SQL with PostgreSQL's `$1, $2, ...` (no `?` in literals)."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


class PostgresStore(SqlReads):
    _NUMERIC = "NUMERIC"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL looks like postgresql://user:password@host/db")
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._open_pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self._url)!r})"

    # lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        self._open_pool = await create_pool(
            self._url, min_size=self._min_size, max_size=self._max_size
        )
        try:
            version = await self._migrate()
        except BaseException:
            await self.close()
            raise
        log.info("PostgreSQL store at %s, schema version %d", mask_url(self._url), version)

    async def _migrate(self) -> int:
        async with self._conn() as conn:
            # Session lock: a second replica waits here until the first has migrated.
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)"
                )
                current = await conn.fetchval(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_version"
                )
                for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                    if version <= current:
                        continue
                    async with conn.transaction():
                        for statement in script:
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_version (version) VALUES ($1)", version
                        )
                    log.info("store schema migrated to version %d", version)
                    current = version
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        return current

    async def close(self) -> None:
        pool, self._open_pool = self._open_pool, None
        if pool is None:
            return
        try:
            # Waits for connections still in use; shutdown must not hang on one of them.
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("PostgreSQL connections still busy after %.0fs: closed", _CLOSE_TIMEOUT)
            pool.terminate()

    @property
    def _pool(self) -> asyncpg.Pool:
        if self._open_pool is None:
            raise RuntimeError("the store is not open")
        return self._open_pool

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._fetch(sql, *params)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement, so one transaction of its own."""
        return await self._pool.fetch(pg(sql), *args)

    async def ping(self) -> bool:
        if self._open_pool is None:
            return False
        try:
            async with self._open_pool.acquire(timeout=_PING_TIMEOUT) as conn:
                await conn.fetchval("SELECT 1", timeout=_PING_TIMEOUT)
        except Exception:
            return False
        return True

    # catalog ---------------------------------------------------------------------------

    async def upsert(self, item: CatalogItem) -> None:
        async with self._tx() as conn:
            await self._write_item(conn, item)

    async def create(self, item: T) -> T:
        table = TABLES[type(item)]
        async with self._tx() as conn:
            # Creates of one kind queue here, and so do upserts into the table: no other
            # transaction can take the id read below before this one commits.
            await conn.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
            top = await conn.fetchval(f"SELECT COALESCE(MAX(CAST(id AS NUMERIC)), 0) FROM {table}")
            created = item.model_copy(update={"id": str(int(top) + 1)})
            await self._write_item(conn, created)
        return created

    async def _write_item(self, conn: asyncpg.Connection, item: CatalogItem) -> None:
        table = TABLES[type(item)]
        values = shared.catalog_columns(item)
        columns = list(values)
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}"
        )
        try:
            await conn.execute(sql, *values.values())
        except asyncpg.UniqueViolationError as exc:
            if not (exc.constraint_name or "").endswith("_slug_unique"):
                raise
            raise Conflict("slug", f"slug {item.slug!r} is already used in this workspace") from exc
        if isinstance(item, Sync):
            await conn.execute(pg(shared.SYNC_STATUS_AFTER_WRITE), item.disabled, item.id)
        await conn.execute(_BUMP_CATALOG)

    async def delete(self, kind: type[CatalogItem], item_id: str, workspace_id: str) -> bool:
        table = TABLES[kind]
        async with self._tx() as conn:
            referrer = _REFERRERS.get(kind)
            if referrer is not None:
                # Nobody may add a reference between the check below and the delete.
                await conn.execute(f"LOCK TABLE {referrer} IN SHARE MODE")
            exists = await conn.fetchval(
                f"SELECT 1 FROM {table} WHERE id = $1 AND workspace_id = $2", item_id, workspace_id
            )
            if exists is None:
                return False  # another workspace's item is not even there to conflict
            for check, field, what in shared.REFERENCE_CHECKS.get(kind, ()):
                used = await conn.fetchval(pg(check), item_id)
                if used is not None:
                    raise Conflict(field, f"{what} {used} still uses it")
            status = await conn.execute(
                f"DELETE FROM {table} WHERE id = $1 AND workspace_id = $2", item_id, workspace_id
            )
            if status == "DELETE 0":
                return False
            if kind is Sync:
                for child in ("row_state", "sync_runs"):
                    await conn.execute(f"DELETE FROM {child} WHERE sync_id = $1", item_id)
            await conn.execute(_BUMP_CATALOG)
        return True

    async def set_sync_status(
        self, sync_id: str, status: SyncStatus, last_run_at: datetime | None = None
    ) -> None:
        if last_run_at is None:
            await self._pool.execute(
                "UPDATE syncs SET status = $1 WHERE id = $2", str(status), sync_id
            )
        else:
            await self._pool.execute(
                "UPDATE syncs SET status = $1, last_run_at = $2 WHERE id = $3",
                str(status),
                last_run_at,
                sync_id,
            )

    # rows ------------------------------------------------------------------------------

    async def write_pending(
        self, rows: Sequence[PendingWrite], snapshot: SnapshotProgress | None = None
    ) -> int:
        if not rows and not snapshot:
            return 0
        kept = 0
        latest: dict[tuple[str, str], PendingWrite] = {}
        for row in rows:
            latest.pop((row.sync_id, row.key), None)  # re-inserted last: seq follows the order
            latest[(row.sync_id, row.key)] = row
        batch = list(latest.values())
        async with self._tx() as conn:
            if batch:
                status = await conn.execute(
                    _UPSERT_CHANGED,
                    [r.sync_id for r in batch],
                    [r.key for r in batch],
                    [r.op for r in batch],
                    [r.data for r in batch],
                    [r.row_hash for r in batch],
                    [r.emitted_at for r in batch],
                )
                kept = _count(status)
            if snapshot:
                await self._snapshot(conn, snapshot)
        return kept

    async def _snapshot(self, conn: asyncpg.Connection, snapshot: SnapshotProgress) -> None:
        now = time.time()
        if snapshot.rejected:
            await conn.executemany(
                pg(shared.STORE_REJECTED),
                [(r.sync_id, r.reason, r.data, now) for r in snapshot.rejected],
            )
        done = {
            pair
            for pair in snapshot.snapshots()
            if await conn.fetchval(pg(shared.IS_CLOSED), *pair)
        }
        snapshot = snapshot.without(done)
        opened = snapshot.snapshots()
        if opened:
            await conn.executemany(
                pg(shared.OPEN_SNAPSHOT), [(s, n, now) for s, n in sorted(opened)]
            )
        if snapshot.keys:
            await conn.executemany(pg(shared.SNAPSHOT_KEY), snapshot.keys)
        for sync_id, snap in snapshot.closed:
            absent = [
                r[0] for r in await conn.fetch(pg(shared.ABSENT_FROM_SNAPSHOT), sync_id, snap)
            ]
            if absent:
                await conn.execute(
                    _UPSERT_PENDING,
                    [sync_id] * len(absent),
                    absent,
                    ["delete"] * len(absent),
                    [None] * len(absent),
                    [None] * len(absent),
                    [None] * len(absent),
                )
            for statement, stamped in shared.CLOSE_SNAPSHOT:
                params = (now, sync_id, snap) if stamped else (sync_id, snap)
                await conn.execute(pg(statement), *params)
        if snapshot.closed:
            cutoff = now - shared.CLOSED_SNAPSHOT_RETENTION_SECONDS
            await conn.execute(pg(shared.PRUNE_SNAPSHOTS), cutoff)

    async def claim_rejected(self, sync_id: str, run_id: str) -> int:
        async with self._tx() as conn:
            status = await conn.execute(pg(shared.CLAIM_REJECTED), run_id, sync_id)
            await conn.execute(
                pg(shared.PRUNE_REJECTED), time.time() - shared.REJECTED_RETENTION_SECONDS
            )
        return _count(status)

    async def requeue_synced(self, sync_id: str) -> int:
        return _count(await self._pool.execute(_REQUEUE, sync_id))

    async def synced_rows(self, sync_id: str, keys: Sequence[str]) -> dict[str, SyncedRow]:
        if not keys:
            return {}
        rows = await self._fetch(
            "SELECT key, synced_hash, data FROM row_state WHERE sync_id = $1 "
            "AND synced_hash IS NOT NULL AND key = ANY($2::text[])",
            sync_id,
            list(keys),
        )
        return {key: SyncedRow(key, row_hash, source) for key, row_hash, source in rows}

    async def record_outcomes(self, sync_id: str, outcomes: RowOutcomes, now: float) -> None:
        if not outcomes:
            return
        # UPDATE ... FROM touches a row once: the last outcome of a key wins.
        sent = {r.key: r for r in outcomes.delivered if r.op != "removed"}
        removed = {r.key: r.seq for r in outcomes.delivered if r.op == "removed"}
        dropped = dict(outcomes.dropped)
        async with self._tx() as conn:
            if sent:
                await conn.execute(
                    _SENT,
                    sync_id,
                    list(sent),
                    [r.row_hash for r in sent.values()],
                    [r.seq for r in sent.values()],
                )
            for statement in _REMOVED if removed else ():
                await conn.execute(statement, sync_id, list(removed), list(removed.values()))
            for statement in _DROPPED if dropped else ():
                await conn.execute(statement, sync_id, list(dropped), list(dropped.values()))
            if outcomes.failed:
                await conn.execute(
                    _FAILED,
                    sync_id,
                    now,
                    [f.key for f in outcomes.failed],
                    [f.seq for f in outcomes.failed],
                    [f.error for f in outcomes.failed],
                )

    # runs ------------------------------------------------------------------------------

    async def acquire_lease(self, sync_id: str, owner: str, seconds: float) -> bool:
        now = time.time()
        status = await self._pool.execute(
            pg(shared.ACQUIRE_LEASE), sync_id, owner, now + seconds, now
        )
        return _count(status) > 0

    async def release_lease(self, sync_id: str, owner: str) -> None:
        await self._pool.execute(pg(shared.RELEASE_LEASE), sync_id, owner)

    async def next_run_id(self) -> str:
        return str(await self._pool.fetchval("SELECT nextval('run_ids')"))

    async def save_run(self, run: SyncRun) -> None:
        await self._pool.execute(pg(shared.SAVE_RUN), *shared.run_columns(run))
