"""The postgres destination's batch writes on a real server: batches larger than `batchBytes`,
rows refused among many, a connection killed while a batch is being written, and a batch
cancelled mid-statement."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from service.core.errors import RetriableError
from service.core.interfaces import Batch, DestinationWriter
from service.core.models import Destination
from service.core.rows import RowChange
from service.destinations.postgres import APPLICATION_NAME
from service.destinations.registry import DestinationContext, open_destination
from tests.destinations.test_contract import POSTGRES_URL
from tests.support import LOCAL_ONLY


@pytest.fixture
async def table() -> AsyncIterator[str]:
    name = f"pg_batches_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except Exception as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES_URL} ({exc!r}); run `make pg-up`")
    await conn.execute(
        f"CREATE TABLE {name} (id bigint PRIMARY KEY, name text NOT NULL, "
        "reject boolean CHECK (reject IS NOT TRUE))"
    )
    await conn.close()
    yield name
    conn = await asyncpg.connect(POSTGRES_URL)
    await conn.execute(f"DROP TABLE IF EXISTS {name}")
    await conn.execute(f"DROP TABLE IF EXISTS {name}_hold")
    await conn.close()


async def writer_for(table: str, **extra: Any) -> DestinationWriter:
    destination = Destination(
        id="1",
        name="d",
        slug="d",
        type="postgres",
        configuration={"dsn": POSTGRES_URL, "table": table, **extra},
    )
    writer = open_destination(destination, DestinationContext("127.0.0.1:9", LOCAL_ONLY))
    await writer.open()
    return writer


def change(op: str, key: int, **data: Any) -> RowChange:
    return RowChange(op, str(key), {"id": key, **data}, seq=key)  # type: ignore[arg-type]


async def table_rows(table: str) -> dict[int, str]:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return {r["id"]: r["name"] for r in await conn.fetch(f"SELECT id, name FROM {table}")}
    finally:
        await conn.close()


async def test_a_batch_larger_than_batch_bytes_lands_whole(table: str) -> None:
    writer = await writer_for(table, batchBytes=1024)
    try:
        chunks = writer._json_chunks([{"id": i, "name": "x" * 100} for i in range(60)])  # type: ignore[attr-defined]
        assert len(chunks) > 1
        assert all(len(c.encode()) <= 1024 for c in chunks)
        rows = [change("added", i, name=f"{i}-" + "x" * 100) for i in range(60)]
        result = await writer.write(Batch("1", "9", "9-1", rows))
        assert result.rejected == {}
        assert await table_rows(table) == {i: f"{i}-" + "x" * 100 for i in range(60)}
    finally:
        await writer.close()


async def test_refused_rows_among_many_are_refused_alone(table: str) -> None:
    writer = await writer_for(table)
    try:
        await writer.write(Batch("1", "9", "9-1", [change("added", 1000, name="gone")]))
        bad_check, bad_null = {7, 250, 251, 499}, {120}
        rows = [
            change("added", i, name=f"n{i}", reject=i in bad_check)
            if i not in bad_null
            else change("added", i, name=None)
            for i in range(500)
        ] + [change("removed", 1000)]
        result = await writer.write(Batch("1", "9", "9-2", rows))
        assert set(result.rejected) == {str(i) for i in bad_check | bad_null}
        assert "NotNullViolation" in result.rejected["120"]
        assert "CheckViolation" in result.rejected["7"]
        landed = await table_rows(table)
        assert set(landed) == set(range(500)) - bad_check - bad_null
        assert landed[6] == "n6"
    finally:
        await writer.close()


async def test_a_connection_killed_mid_batch_is_retriable_and_the_retry_lands(
    table: str,
) -> None:
    """A trigger holds the batch's statement (see `held`); the test kills that backend, lets
    go, and writes the same batch again."""
    rows = [change("added", i, name=f"n{i}") for i in range(300)]
    async with held(table) as admin:
        writer = await writer_for(table)
        try:
            writing = asyncio.create_task(writer.write(Batch("1", "9", "9-1", rows)))
            pid = await held_backend(admin, table)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(RetriableError):
                await writing
            await admin.execute(f"DELETE FROM {table}_hold")
            assert await table_rows(table) == {}
            result = await writer.write(Batch("1", "9", "9-1", rows))
            assert result.rejected == {}
            assert await table_rows(table) == {i: f"n{i}" for i in range(300)}
        finally:
            await writer.close()


async def test_a_batch_cancelled_mid_statement_leaves_its_connection_fit_for_the_next(
    table: str,
) -> None:
    """The pool skips asyncpg's reset statement on release (`keep_session`), and a batch of one
    statement runs without a transaction: a write cancelled while its statement runs (a
    timeout) must still leave its connection idle, outside any transaction, and the next batch
    must land on it. One connection, so the next batch takes the same one."""
    async with held(table) as admin:
        writer = await writer_for(table, maxConcurrency=1)
        try:
            writing = asyncio.create_task(
                writer.write(Batch("1", "9", "9-1", [change("added", 1, name="cancelled")]))
            )
            await held_backend(admin, table)
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await writing
            await admin.execute(f"DELETE FROM {table}_hold")
            rows = [change("added", i, name=f"n{i}") for i in range(2, 50)]
            assert (await writer.write(Batch("1", "9", "9-2", rows))).rejected == {}
            assert await table_rows(table) == {i: f"n{i}" for i in range(2, 50)}
            idle_in_transaction = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND state LIKE 'idle in transaction%'",
                APPLICATION_NAME,
            )
            assert idle_in_transaction == 0
        finally:
            await writer.close()


@asynccontextmanager
async def held(table: str) -> AsyncIterator[asyncpg.Connection]:
    """An admin connection, while `table` has a trigger that holds every insert as long as a
    row is in `<table>_hold` (one is, until the test deletes it); drops both afterwards."""
    admin = await asyncpg.connect(POSTGRES_URL)
    hold = f"{table}_hold"
    await admin.execute(
        f"""
        CREATE TABLE {hold} (x int);
        INSERT INTO {hold} VALUES (1);
        CREATE FUNCTION {table}_wait() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          WHILE EXISTS (SELECT 1 FROM {hold}) LOOP PERFORM pg_sleep(0.05); END LOOP;
          RETURN NEW;
        END $$;
        CREATE TRIGGER wait BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_wait();
        """
    )
    try:
        yield admin
    finally:
        await admin.execute(f"DROP TABLE IF EXISTS {table}; DROP FUNCTION {table}_wait()")
        await admin.close()


async def held_backend(admin: asyncpg.Connection, table: str) -> int:
    """The pid of the backend whose insert into `table` is being held."""
    while True:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
            f"INSERT INTO %{table}%",
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
