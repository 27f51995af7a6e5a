"""The PostgreSQL store out of reach for a while: the service stays up, answers /readyz with 503,
commits nothing it has not stored, and catches up by itself once the store is back."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.e2e.conftest import Harness
from tests.e2e.test_service import user
from tests.support import wait_for

pytestmark = pytest.mark.kafka

POSTGRES = os.environ.get("SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync")


class Cable:
    """A TCP proxy to PostgreSQL that can be cut (connections dropped, new ones refused) and
    joined again on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def join(self) -> None:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


@pytest.fixture
async def cable(uid: str) -> AsyncIterator[tuple[Cable, str]]:
    schema = f"outage_{uid}"
    admin = await asyncpg.connect(POSTGRES, timeout=5)
    await admin.execute(f"CREATE SCHEMA {schema}")
    host, port = POSTGRES.split("@", 1)[1].split("/", 1)[0].split(":")
    c = Cable(host, int(port))
    await c.join()
    head, db = POSTGRES.rsplit("/", 1)
    url = f"{head.rsplit(':', 1)[0]}:{c.port}/{db}?search_path={schema}"
    try:
        yield c, url
    finally:
        if c._server is not None:
            await c.cut()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


async def ready(base: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(f"{base}/readyz") as r:
        return r.status


async def test_a_store_out_of_reach_holds_the_service_back_then_it_catches_up(
    e2e: Harness, cable: tuple[Cable, str]
) -> None:
    c, url = cable
    e2e.env["SYNC_DATABASE_URL"] = url
    service = await e2e.service()
    await e2e.event("upsert", [user(1)])
    await e2e.receiver.wait_rows(1)

    await c.cut()
    await e2e.event("upsert", [user(2)])
    await e2e.event("upsert", [user(3)])
    await wait_for(lambda: _is(ready(service.base), 503), what="/readyz 503 without the store")
    assert service.proc is not None and service.proc.returncode is None

    await c.join()

    def keys() -> set[str]:
        return {str(r["key"]) for r in e2e.receiver.rows}

    # At least once: a row may come twice (its outcome could not be recorded), never not at all.
    await wait_for(lambda: keys() == {"1", "2", "3"}, timeout=60, what=f"rows 1-3, got {keys()}")
    await wait_for(lambda: _is(ready(service.base), 200), timeout=30, what="/readyz 200 again")
    assert service.proc.returncode is None


async def _is(status: object, expected: int) -> bool:
    return await status == expected  # type: ignore[misc]
