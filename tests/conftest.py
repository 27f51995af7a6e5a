"""Shared fixtures: the real Kafka broker, a real webhook receiver, unique names."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from blockbuster import blockbuster_ctx

from tests.support import Receiver

# The fault suite starts, kills and restarts servers of its own for minutes: `make test-faults`.
collect_ignore = [] if os.environ.get("RUN_FAULT_SUITE") else ["faults"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that reaches the broker or PostgreSQL carries `kafka` or `postgres`, so that
    `make test-unit` (neither marker) needs no server."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = {str(v) for v in callspec.params.values()} if callspec else set()
        if "kafka_bootstrap" in names or params & {"kafka", "kafka-tombstone"}:
            item.add_marker(pytest.mark.kafka)
        if "postgres_url" in names or "postgres" in params:
            item.add_marker(pytest.mark.postgres)


def kafka_address() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """The broker `make test` started; a missing broker is an error, never a skip."""
    address = kafka_address()

    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    try:
        # A thread of its own: the first test to ask may already be inside an event loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(lambda: asyncio.run(asyncio.wait_for(probe(), 15))).result()
    except Exception as exc:
        pytest.fail(f"no Kafka broker at {address} ({exc!r}); run `make kafka-up`", pytrace=False)
    return address


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[None]:
    """Fail any test in which a blocking call runs inside the event loop."""
    with blockbuster_ctx("service") as bb:
        yield bb


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()
