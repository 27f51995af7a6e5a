"""bench/pgcpu.py against a real server: PostgreSQL's CPU told apart by the sessions' roles."""

from __future__ import annotations

import asyncio

import asyncpg

from bench import pgcpu
from tests.contract.conftest import POSTGRES_URL

#: A statement that keeps its backend busy for a few hundred milliseconds.
_BURN = "SELECT count(*) FROM generate_series(1, 4000000)"


async def _session(role: str) -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES_URL, server_settings={"application_name": role})


async def test_server_cpu_is_counted_by_the_sessions_role(postgres_url: str) -> None:
    meter = pgcpu.PgCpu(POSTGRES_URL)
    await meter.start()
    store = await _session("sync-service store")
    gone = await _session("sync-service destination")
    try:
        await store.execute(_BURN)
        await gone.execute(_BURN)
        # The destination's session ends inside the window: it keeps the CPU last seen.
        await asyncio.sleep(2 * pgcpu.INTERVAL)
        await gone.close()
        spent = await meter.stop()
    finally:
        await store.close()
        if not gone.is_closed():
            await gone.close()

    assert spent is not None
    assert spent["store"] > 0.05
    assert spent["destination"] > 0.05
    assert spent["peer"] == 0
    assert spent["total"] >= spent["store"] + spent["destination"]
    assert await meter.stop() is None  # stopped once
