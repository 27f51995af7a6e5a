"""The SQLite store's connections (a real database file): reads beside the writer, one trip to
SQLite's thread per statement, and transactions that stay whole when their caller is
cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.store.dialect import WRITER_CACHE_KIB, SqliteDialect
from service.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    async with store._d.tx() as conn:
        await conn.execute("CREATE TABLE scratch (x INTEGER)")
    yield store
    await store.close()


def dialect(store: SqliteStore) -> SqliteDialect:
    d = store._d
    assert isinstance(d, SqliteDialect)
    return d


async def scratch(store: SqliteStore) -> list[int]:
    async with store._d.read() as conn:
        return [row[0] for row in await conn.fetch("SELECT x FROM scratch ORDER BY x")]


async def test_reads_do_not_wait_for_a_write_transaction(store: SqliteStore) -> None:
    async with store._d.tx() as conn:
        await conn.execute("INSERT INTO scratch (x) VALUES (1)")
        # The writer holds its transaction open: a read answers meanwhile, from the last commit.
        assert await asyncio.wait_for(scratch(store), 5) == []
        assert await asyncio.wait_for(store.catalog_version(), 5) >= 0
    assert await scratch(store) == [1]


async def test_a_transaction_that_runs_no_statement_opens_none(store: SqliteStore) -> None:
    d = dialect(store)
    async with d.tx():
        pass
    assert not d._conn.in_transaction
    async with d.tx() as conn:
        assert not d._conn.in_transaction  # BEGIN goes with the first statement
        await conn.execute("INSERT INTO scratch (x) VALUES (2)")
        assert d._conn.in_transaction
    assert not d._conn.in_transaction
    assert await scratch(store) == [2]


async def test_statements_of_one_trip_run_in_order_in_the_transaction(store: SqliteStore) -> None:
    async with store._d.tx() as conn:
        found = await conn.fetch_each(  # type: ignore[attr-defined]
            [
                ("INSERT INTO scratch (x) VALUES (?)", (3,)),
                ("INSERT INTO scratch (x) VALUES (?)", (4,)),
                ("SELECT count(*) FROM scratch", ()),
            ]
        )
    assert found == [[], [], [(2,)]]
    assert await scratch(store) == [3, 4]


async def test_a_failing_statement_rolls_the_transaction_back(store: SqliteStore) -> None:
    with pytest.raises(Exception, match="no such table"):
        async with store._d.tx() as conn:
            await conn.execute("INSERT INTO scratch (x) VALUES (5)")
            await conn.execute("INSERT INTO nowhere (x) VALUES (6)")
    assert not dialect(store)._conn.in_transaction
    assert await scratch(store) == []
    async with store._d.tx() as conn:  # the connection is usable again
        await conn.execute("INSERT INTO scratch (x) VALUES (7)")
    assert await scratch(store) == [7]


@pytest.mark.parametrize("where", ["first statement", "after a statement", "commit"])
async def test_a_cancelled_transaction_is_rolled_back_or_committed_whole(
    store: SqliteStore, where: str
) -> None:
    """Cancelled at any await, a transaction leaves the shared connection outside any
    transaction, with all of its rows or none."""
    d = dialect(store)
    reached = asyncio.Event()
    hold = asyncio.Event()

    async def write() -> None:
        async with d.tx() as conn:
            if where == "first statement":
                reached.set()
            await conn.execute("INSERT INTO scratch (x) VALUES (8)")
            if where == "after a statement":
                reached.set()
                await hold.wait()
            await conn.execute("INSERT INTO scratch (x) VALUES (9)")
            conn.seq += 1  # the commit then writes the seq counter too
            if where == "commit":
                reached.set()

    task = asyncio.create_task(write())
    await reached.wait()
    task.cancel()
    await asyncio.wait({task})
    assert not d._conn.in_transaction
    assert await scratch(store) in ([], [8, 9])
    async with d.tx() as conn:
        await conn.execute("INSERT INTO scratch (x) VALUES (10)")
    assert (await scratch(store))[-1] == 10


async def test_the_writer_is_durable_in_wal_with_its_own_page_cache(store: SqliteStore) -> None:
    d = dialect(store)
    async with d.tx() as conn:
        settings = {
            name: (await conn.fetch(f"PRAGMA {name}"))[0][0]
            for name in ("journal_mode", "synchronous", "cache_size")
        }
    # synchronous 2 is FULL: a commit survives power loss before offsets are committed.
    assert settings == {"journal_mode": "wal", "synchronous": 2, "cache_size": -WRITER_CACHE_KIB}
