"""What really differs between the store's two databases: connecting, transactions, locking,
migrating, and which hand-tuned statements serve the hot paths (see service/store/sql)."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from service.store import schema
from service.store.base import StoreUnavailable
from service.store.conn import Conn, PostgresConn, SqliteConn, settled
from service.store.pgconnect import create_pool, mask_url
from service.store.sql.ingest import PostgresIngest, SqliteIngest
from service.store.sql.outcomes import PostgresOutcomes, SqliteOutcomes
from service.store.sql.pages import PostgresPages, SqlitePages
from service.store.sql.streamed import PostgresStreamed, SqliteStreamed

log = logging.getLogger(__name__)

_SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)"
_SCHEMA_VERSION = "SELECT COALESCE(MAX(version), 0) FROM schema_version"
_RECORD_VERSION = "INSERT INTO schema_version (version) VALUES (?)"


class Dialect:
    """The interface SqlStore relies on; SqliteDialect and PostgresDialect implement it."""

    types: ClassVar[schema.Types]
    ingest: ClassVar[type[SqliteIngest] | type[PostgresIngest]]
    pages: ClassVar[type[SqlitePages] | type[PostgresPages]]
    outcomes: ClassVar[type[SqliteOutcomes] | type[PostgresOutcomes]]
    streamed: ClassVar[type[SqliteStreamed] | type[PostgresStreamed]]
    #: SQL type that orders ids as numbers.
    numeric: ClassVar[str]
    #: A text field of a catalog row's JSON document (`{field}`), NULL when the document is
    #: not JSON (SQLite; PostgreSQL 15 has no such test, so its list orders need valid JSON).
    doc_field: ClassVar[str]
    #: Suffix of a text ORDER BY term so both dialects order by code point.
    text_order: ClassVar[str]
    #: Suffix of a SELECT that keeps the rows it read locked until the transaction ends.
    for_share: ClassVar[str]
    skip_locked: ClassVar[str]
    #: True when this process is the store's only user (it may take over every lease).
    alone: ClassVar[bool]
    #: Runs never saved under a lease and created before this are orphaned (see the store).
    orphan_cutoff: float = 0.0

    def __init__(self, *, timeout: float, schema_upto: int | None) -> None:
        self.timeout = timeout
        self.schema_upto = schema_upto

    async def open(self, migrate: bool = True) -> None: ...
    async def close(self) -> None: ...

    async def schema_version(self) -> int:
        """The schema version the database holds now (0: none), read without opening the
        store for use or migrating it."""
        raise NotImplementedError

    async def ping(self) -> bool:
        """True when the store answers a trivial query (in time)."""
        try:
            async with self.read() as conn:
                await conn.fetchval("SELECT 1")
        except Exception:
            return False
        return True

    def tx(self) -> Any:
        """async context manager: a Conn in a write transaction."""

    def read(self) -> Any:
        """async context manager: a Conn for reads, each statement its own transaction."""

    def write_one(self) -> Any:
        """async context manager: a Conn for one write statement, atomic on its own. Where a
        transaction costs round trips (PostgreSQL: BEGIN and COMMIT), the statement runs
        without one; elsewhere this is `tx`."""
        return self.tx()

    async def lock_table(self, conn: Conn, table: str, mode: str) -> None:
        """Hold `table` in `mode` until the transaction ends (PostgreSQL; SQLite's writer
        lock already covers the whole file)."""

    def is_slug_conflict(self, exc: Exception) -> bool: ...

    async def allow_long(self, conn: Conn, factor: float) -> None:
        """Let this transaction's statements run `factor` times the store timeout (upkeep
        over many rows); SQLite's timeout bounds only the wait for the write lock."""

    def timestamp(self, value: datetime) -> Any:
        """A sync's last_run_at as the column stores it."""
        return value

    async def next_run_id(self, conn: Conn) -> int: ...

    def migrations(self) -> list[list[str]]:
        return schema.migrations(self.types, self.schema_upto)


# SQLite ----------------------------------------------------------------------------------


def sqlite_path(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `sqlite:///:memory:`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError("a SQLite URL looks like sqlite:///./sync-service.db")
    path = url[len(prefix) :]
    if not path:
        raise ValueError("the SQLite URL names no file")
    return path


#: Lock files this process holds: path -> (descriptor, stores using it). POSIX locks belong
#: to the process, and closing any descriptor of the file drops them, so each file is opened
#: once and closed with its last store.
_LOCK_FILES: dict[str, tuple[int, int]] = {}


def _lock_file(path: str) -> str:
    """Hold `path` locked for this process; the key to unlock it with."""
    key = os.path.realpath(path)
    if key in _LOCK_FILES:
        fd, users = _LOCK_FILES[key]
        _LOCK_FILES[key] = (fd, users + 1)
        return key
    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreUnavailable(
            f"the SQLite store {path[:-5]} is in use by another process "
            f"(it holds {path}); SQLite serves one process: stop it or use PostgreSQL"
        ) from None
    _LOCK_FILES[key] = (fd, 1)
    return key


def _unlock_file(key: str) -> None:
    fd, users = _LOCK_FILES.pop(key, (-1, 0))
    if users > 1:
        _LOCK_FILES[key] = (fd, users - 1)
    elif fd >= 0:
        os.close(fd)  # drops the lock


#: The writing connection's page cache (SQLite's default is 2 MiB). Rows of keys in no order
#: (UUIDs, e-mail addresses) land on leaf pages all over the (sync_id, key) index: with the
#: default, a transaction of a thousand such rows evicts and reads back the pages it dirties.
#: 16 MiB holds them while the index's leaf pages fit (figures: `bench/README.md`, "Keys in
#: no order"); reads gained nothing from a larger cache of their own.
WRITER_CACHE_KIB = 16 << 10


class SqliteDialect(Dialect):
    """One process: aiosqlite, WAL, one writer at a time, a `<db>.lock` file held for the
    process's life. Pending-row seqs and run ids come from counters in `meta`. Reads go
    through a second connection (WAL readers never wait for the writer), so the consumer's
    reads per batch do not queue behind the outcome writes of batches sent."""

    types = schema.SQLITE
    ingest = SqliteIngest
    pages = SqlitePages
    outcomes = SqliteOutcomes
    streamed = SqliteStreamed
    numeric = "INTEGER"
    doc_field = "CASE WHEN json_valid(doc) THEN doc ->> '$.{field}' END"
    text_order = ""
    for_share = ""
    skip_locked = ""
    alone = True

    def __init__(self, url: str, *, timeout: float, schema_upto: int | None = None) -> None:
        super().__init__(timeout=timeout, schema_upto=schema_upto)
        self.path = sqlite_path(url)
        self._db: Any = None
        #: The connection reads go through (the writer's own for an in-memory database).
        self._reader: Any = None
        self._locked: str | None = None
        # aiosqlite shares one connection; transactions must not interleave on it.
        self._lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._seq = 0

    async def open(self, migrate: bool = True) -> None:
        if self.path != ":memory:":
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
            self._locked = await asyncio.to_thread(_lock_file, self.path + ".lock")
        self.orphan_cutoff = time.time()
        try:
            await self._connect(migrate)
        except BaseException:
            await self.close()
            raise

    async def schema_version(self) -> int:
        import aiosqlite

        if self.path == ":memory:" or not await asyncio.to_thread(Path(self.path).exists):
            return 0
        # Read-only and without the lock file: the process that holds it may be migrating.
        uri = f"file:{await asyncio.to_thread(os.path.realpath, self.path)}?mode=ro"
        async with aiosqlite.connect(uri, uri=True, timeout=self.timeout) as db:
            async with db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ) as cur:
                if await cur.fetchone() is None:
                    return 0
            async with db.execute(_SCHEMA_VERSION) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _connect(self, migrate: bool = True) -> None:
        import aiosqlite

        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self._db.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        # Rows of a few hundred bytes: larger pages make fewer splits (a new file only).
        await self._db.execute("PRAGMA page_size=16384")
        await self._wal()
        # FULL: a committed ingest transaction survives power loss before offsets are committed.
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        if migrate:
            await self._migrate()
        async with self._db.execute("SELECT value FROM meta WHERE name = 'seq'") as cur:
            meta = await cur.fetchone()
        self._seq = meta[0] if meta else 0
        if self.path != ":memory:":
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            await self._reader.execute("PRAGMA query_only=1")

    async def _wal(self) -> None:
        """Switch to WAL. SQLite answers "locked" at once, without its busy wait, while another
        connection opening the same new file switches too: so wait a little and try again."""
        for attempt in range(50):
            try:
                await self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    async def _migrate(self) -> None:
        db = self._db
        await db.execute(_SCHEMA_TABLE)
        for version, script in enumerate(self.migrations(), start=1):
            async with self.tx() as conn:
                # Read under the write lock: another connection opening the same file at the
                # same time may have applied this version while we waited.
                if await conn.fetchval(_SCHEMA_VERSION) >= version:
                    continue
                for statement in script:
                    await conn.execute(statement)
                await conn.execute(_RECORD_VERSION, version)

    async def close(self) -> None:
        if self._reader is not None:
            async with self._read_lock:
                await self._reader.close()
            self._reader = None
        if self._db is not None:
            async with self._lock:
                await self._db.close()
            self._db = None
        if self._locked is not None:
            await asyncio.to_thread(_unlock_file, self._locked)
            self._locked = None

    @property
    def _conn(self) -> Any:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        async with self._lock:
            db = self._conn
            conn = SqliteConn(db, self._seq, begin="BEGIN IMMEDIATE")
            try:
                yield conn
                seq = None
                if conn.seq != self._seq:
                    seq = ("UPDATE meta SET value = ? WHERE name = 'seq'", (conn.seq,))
                try:
                    await conn.finish(seq)
                finally:
                    if not db.in_transaction:  # committed, even if cancelled meanwhile
                        self._seq = conn.seq
            except BaseException:
                if db.in_transaction:  # never leave the shared connection inside a transaction
                    await settled(db.execute("ROLLBACK"))
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        if self._reader is None:
            async with self._lock:
                yield SqliteConn(self._conn)
            return
        async with self._read_lock:
            yield SqliteConn(self._reader)

    def is_slug_conflict(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def timestamp(self, value: datetime) -> Any:
        return value.isoformat()

    async def next_run_id(self, conn: Conn) -> int:
        await conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'run_id'")
        return int(await conn.fetchval("SELECT value FROM meta WHERE name = 'run_id'"))


# PostgreSQL ------------------------------------------------------------------------------

#: pg_advisory_lock key held while migrating ("syncsvc" + 1), so replicas starting together
#: apply each migration once.
MIGRATION_LOCK = int.from_bytes(b"syncsvc\x01", "big")
_CLOSE_TIMEOUT = 5.0


class PostgresDialect(Dialect):
    """Several replicas: asyncpg, a pool, statement_timeout and a bounded wait for a
    connection. Seqs and run ids come from sequences; `create` locks the table it picks the
    next id from; migrations run under an advisory lock."""

    types = schema.POSTGRES
    ingest = PostgresIngest
    pages = PostgresPages
    outcomes = PostgresOutcomes
    streamed = PostgresStreamed
    numeric = "NUMERIC"
    doc_field = "(doc::jsonb ->> '{field}')"
    text_order = ' COLLATE "C"'
    for_share = " FOR SHARE"
    skip_locked = " FOR UPDATE SKIP LOCKED"
    alone = False

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        min_size: int = 1,
        max_size: int = 10,
        schema_upto: int | None = None,
    ) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL looks like postgresql://user:password@host/db")
        super().__init__(timeout=timeout, schema_upto=schema_upto)
        self.url = url
        self._min_size = min_size
        self._max_size = max_size
        self._pool: Any = None

    async def open(self, migrate: bool = True) -> None:
        self._pool = await create_pool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            connect_timeout=self.timeout,
            statement_timeout=self.timeout,
        )
        try:
            version = await self._migrate() if migrate else await self._version()
        except BaseException:
            await self.close()
            raise
        log.info("PostgreSQL store at %s, schema version %d", mask_url(self.url), version)

    async def _version(self) -> int:
        async with self._acquire() as raw:
            conn = PostgresConn(raw)
            if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                return 0
            return int(await conn.fetchval(_SCHEMA_VERSION))

    async def schema_version(self) -> int:
        pool = await create_pool(
            self.url,
            min_size=1,
            max_size=1,
            connect_timeout=self.timeout,
            statement_timeout=self.timeout,
        )
        try:
            async with pool.acquire(timeout=self.timeout) as raw:
                conn = PostgresConn(raw)
                if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
                    return 0
                return int(await conn.fetchval(_SCHEMA_VERSION))
        finally:
            await pool.close()

    async def _migrate(self) -> int:
        async with self._acquire() as raw:
            conn = PostgresConn(raw)
            # A migration rewrites whole tables, and waits for another replica's: unbounded.
            await conn.execute("SET statement_timeout = 0")
            # Session lock: a second replica waits here until the first has migrated.
            await conn.execute("SELECT pg_advisory_lock(?)", MIGRATION_LOCK)
            try:
                await conn.execute(_SCHEMA_TABLE)
                current = await conn.fetchval(_SCHEMA_VERSION)
                for version, script in enumerate(self.migrations(), start=1):
                    if version <= current:
                        continue
                    async with raw.transaction():
                        for statement in script:
                            await conn.execute(statement)
                        await conn.execute(_RECORD_VERSION, version)
                    log.info("store schema migrated to version %d", version)
                    current = version
            finally:
                await conn.execute("SELECT pg_advisory_unlock(?)", MIGRATION_LOCK)
                await conn.execute("RESET statement_timeout")
        return current

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # Waits for connections still in use; shutdown must not hang on one of them.
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("PostgreSQL connections still busy after %.0fs: closed", _CLOSE_TIMEOUT)
            pool.terminate()

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[Any]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        try:
            raw = await self._pool.acquire(timeout=self.timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"no PostgreSQL connection free within {self.timeout:g}s"
            ) from None
        try:
            yield raw
        finally:
            await self._pool.release(raw)

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Conn]:
        async with self._acquire() as raw, raw.transaction():
            yield PostgresConn(raw)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        async with self._acquire() as raw:
            yield PostgresConn(raw)

    write_one = read

    async def lock_table(self, conn: Conn, table: str, mode: str) -> None:
        await conn.execute(f"LOCK TABLE {table} IN {mode} MODE")

    async def allow_long(self, conn: Conn, factor: float) -> None:
        await conn.execute(f"SET LOCAL statement_timeout = {int(self.timeout * factor * 1000)}")

    def is_slug_conflict(self, exc: Exception) -> bool:
        import asyncpg

        return isinstance(exc, asyncpg.UniqueViolationError) and (
            exc.constraint_name or ""
        ).endswith("_slug_unique")

    async def next_run_id(self, conn: Conn) -> int:
        return int(await conn.fetchval("SELECT nextval('run_ids')"))
