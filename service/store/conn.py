"""One connection in a transaction, as the store's logic sees it: the same four calls over
aiosqlite and asyncpg. SQL may use `?` placeholders; PostgreSQL's become `$1, $2, ...`."""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=512)
def pg(sql: str) -> str:
    """`?`-placeholder SQL with PostgreSQL's `$1, $2, ...` (no `?` in literals)."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)


def count(status: str) -> int:
    """The row count of a command status such as `INSERT 0 12` or `UPDATE 3`."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class Conn(Protocol):
    #: SQLite: the last pending-row seq handed out in this transaction (stored at commit).
    seq: int

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; how many rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row, None when there is none."""


class SqliteConn:
    """Each call is one trip to the connection's thread: the cursor is opened, run, read and
    closed there. Every trip hands the GIL over twice and waits for the event loop's next
    turn, which under load costs far more than the statement; so a transaction's BEGIN
    travels with its first statement (`begin`), its COMMIT with the update of the seq counter
    (`finish`), and `fetch_each` runs several statements in one trip."""

    def __init__(self, db: Any, seq: int = 0, *, begin: str | None = None) -> None:
        self._db = db
        self.seq = seq
        #: Sent ahead of the first statement (a transaction that writes nothing never opens).
        self._begin = begin

    async def _trip(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, begin, *args)` on the connection's thread, run to its end."""
        begin, self._begin = self._begin, None
        return await settled(self._db._execute(fn, self._db._conn, begin, *args))

    async def _call(self, sql: str, args: Sequence[Any], many: bool = False) -> Any:
        return await self._trip(_run, sql, args, many)

    async def execute(self, sql: str, *args: Any) -> int:
        count, _ = await self._call(sql, args)
        return int(count)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._call(sql, list(rows), many=True)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        _, rows = await self._call(sql, args)
        return list(rows)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        _, rows = await self._call(sql, args)
        return rows[0][0] if rows else None

    async def fetch_each(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """The rows of each statement, run in order in one trip."""
        return await self._trip(_run_each, statements)

    async def finish(self, last: tuple[str, Sequence[Any]] | None = None) -> None:
        """`last` (a statement and its arguments) then COMMIT, in one trip; nothing when no
        statement opened the transaction."""
        if self._begin is not None:
            return
        await settled(self._db._execute(_commit, self._db._conn, last))


def _run(
    conn: sqlite3.Connection, begin: str | None, sql: str, args: Any, many: bool
) -> tuple[int, list[Any]]:
    """On the connection's thread."""
    if begin is not None:
        conn.execute(begin)
    cur = conn.executemany(sql, args) if many else conn.execute(sql, args)
    try:
        return max(cur.rowcount, 0), cur.fetchall()
    finally:
        cur.close()


def _run_each(
    conn: sqlite3.Connection, begin: str | None, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[Any]]:
    """On the connection's thread."""
    if begin is not None:
        conn.execute(begin)
    found = []
    for sql, args in statements:
        cur = conn.execute(sql, args)
        try:
            found.append(cur.fetchall())
        finally:
            cur.close()
    return found


def _commit(conn: sqlite3.Connection, last: tuple[str, Sequence[Any]] | None) -> None:
    """On the connection's thread."""
    if last is not None:
        conn.execute(*last).close()
    conn.execute("COMMIT").close()


async def settled(statement: Awaitable[T]) -> T:
    """Await a statement to its end even when the caller is cancelled meanwhile (the
    statement runs on in SQLite's thread regardless), then pass the cancellation on: the
    transaction's state is then known when it is committed or rolled back."""
    task = asyncio.ensure_future(statement)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class PostgresConn:
    seq = 0  # pending-row seqs come from a sequence

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return count(await self._conn.execute(pg(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(pg(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._conn.fetch(pg(sql), *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._conn.fetchval(pg(sql), *args)
