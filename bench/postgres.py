"""S4's PostgreSQL: whether it answers, and a fresh schema per run (the service's tables and
the destination table live in it, dropped afterwards)."""

from __future__ import annotations

import secrets

import asyncpg

from bench.events import COLUMNS
from bench.settings import PG_URL


async def reachable() -> str | None:
    """None when the database answers, else why not."""
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at 127.0.0.1 does not answer: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


class Schema:
    """`async with Schema() as url`: a URL whose search_path is a new, empty schema."""

    def __init__(self) -> None:
        self.name = f"bench_{secrets.token_hex(4)}"

    async def __aenter__(self) -> str:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f"CREATE SCHEMA {self.name}")
        finally:
            await conn.close()
        return f"{PG_URL}?search_path={self.name}"

    async def __aexit__(self, *exc: object) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        finally:
            await conn.close()


#: The destination table as the service's createTable makes it for the bench's rows.
TARGET_TABLE = "bench_target"
_TYPES = {"id": "bigint PRIMARY KEY", "mrr": "double precision"}


async def create_target(schema: str) -> None:
    """`<schema>.bench_target` made up front, for writers that do not create it (the peer) or
    that could race to (two service processes)."""
    conn = await asyncpg.connect(PG_URL)
    try:
        columns = ", ".join(f"{c} {_TYPES.get(c, 'text')}" for c in COLUMNS)
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{TARGET_TABLE} ({columns})")
    finally:
        await conn.close()


async def count_target(schema: str) -> int:
    conn = await asyncpg.connect(PG_URL)
    try:
        return await conn.fetchval(f"SELECT count(*) FROM {schema}.{TARGET_TABLE}")
    finally:
        await conn.close()
