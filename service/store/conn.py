"""One connection in a transaction, as the store's logic sees it: the same four calls over
aiosqlite and asyncpg. SQL may use `?` placeholders; PostgreSQL's become `$1, $2, ...`."""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

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
    def __init__(self, db: Any, seq: int = 0) -> None:
        self._db = db
        self.seq = seq

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._db.execute(sql, args) as cur:
            return max(cur.rowcount, 0)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._db.execute(sql, args) as cur:
            return list(await cur.fetchall())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return row[0] if row else None


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
