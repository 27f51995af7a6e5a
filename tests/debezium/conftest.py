"""Fixtures of the change data capture tests: PostgreSQL with logical replication and a Kafka
Connect worker with Debezium, started once per session (Connect takes the longest to start)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from tests.debezium.cdc import CDC_SCRIPT, ConnectClient, pg_dsn, start_cdc


def _connect_up() -> bool:
    done = subprocess.run(
        ["bash", str(CDC_SCRIPT), "status"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


@pytest.fixture(scope="session")
def cdc(kafka_bootstrap: str) -> Iterator[str]:
    """The infrastructure's start time is written to the terminal; what this session started,
    it stops (a worker that already ran is reused and left running)."""
    already = _connect_up()
    seconds = start_cdc()
    sys.stderr.write(f"\ncdc: PostgreSQL and Kafka Connect ready in {seconds:.1f}s\n")
    yield kafka_bootstrap
    if not already:
        subprocess.run(
            ["bash", str(CDC_SCRIPT), "down"], capture_output=True, timeout=120, check=False
        )


@pytest.fixture
async def connect(cdc: str) -> AsyncIterator[ConnectClient]:
    client = ConnectClient()
    yield client
    await client.close()


@pytest.fixture
async def source_db(cdc: str) -> AsyncIterator[asyncpg.Connection]:
    db = await asyncpg.connect(pg_dsn())
    yield db
    await db.close()
