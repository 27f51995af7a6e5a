"""S4's PostgreSQL: whether it answers, and a fresh schema per run (the service's tables and
the destination table live in it, dropped afterwards)."""

from __future__ import annotations

import secrets

import asyncpg

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
