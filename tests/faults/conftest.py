"""The fault suite's own broker and PostgreSQL (never the shared ones), and its summary."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FIGURES, ROOT, SUMMARY, Cluster, Script, Servers, TimedReceiver

KAFKA_PORT = int(os.environ.get("FAULTS_KAFKA_PORT", "19092"))
PG_PORT = int(os.environ.get("FAULTS_PG_PORT", "55450"))
SHARED = {9092, 55432}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kafka)
            if item.get_closest_marker("timeout") is None:
                # The first test also waits for the broker to start (a minute on a busy machine).
                item.add_marker(pytest.mark.timeout(600))


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    if KAFKA_PORT in SHARED or PG_PORT in SHARED:
        pytest.fail("the fault suite kills its servers: give it ports of its own", pytrace=False)
    cache = ROOT / ".cache"
    kafka = Script(
        ROOT / "scripts" / "kafka" / "kafka.sh",
        {
            "KAFKA_PORT": str(KAFKA_PORT),
            "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
            "KAFKA_CACHE_DIR": os.environ.get("KAFKA_CACHE_DIR", str(cache / "kafka")),
            "KAFKA_RUN_DIR": str(cache / "faults" / f"kafka-{KAFKA_PORT}"),
            "KAFKA_NUM_PARTITIONS": "6",
            "KAFKA_HEAP": "512m",
        },
    )
    postgres = Script(
        ROOT / "scripts" / "postgres.sh",
        {"PG_PORT": str(PG_PORT), "PG_CACHE_DIR": str(cache / "faults" / "postgres")},
    )
    asyncio.run(kafka("up"))
    asyncio.run(postgres("up"))
    try:
        yield Servers(
            kafka=f"127.0.0.1:{KAFKA_PORT}",
            postgres_url=f"postgresql://sync:sync@127.0.0.1:{PG_PORT}/sync",
            kafka_script=kafka,
            postgres_script=postgres,
        )
    finally:
        if not os.environ.get("FAULTS_KEEP_SERVERS"):
            asyncio.run(kafka("down"))
            asyncio.run(postgres("down"))


@pytest.fixture
async def running(servers: Servers) -> AsyncIterator[Servers]:
    """The servers, started again after a test that killed them."""
    yield servers
    await servers.start_kafka()
    await servers.start_postgres()


@pytest.fixture
async def receiver() -> AsyncIterator[TimedReceiver]:
    r = TimedReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def cluster(
    tmp_path: Path, running: Servers, uid: str, receiver: TimedReceiver
) -> AsyncIterator[Cluster]:
    from tests.faults.harness import resources

    c = Cluster(tmp_path, running, uid)
    c.write_resources(resources(receiver.url))
    yield c
    await c.close()


@pytest.fixture
async def postgres_store(running: Servers, uid: str) -> AsyncIterator[str]:
    """A schema of its own on the suite's PostgreSQL, as a store URL."""
    import asyncpg

    schema = f"faults_{uid}"
    conn = await asyncpg.connect(running.postgres_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    yield f"{running.postgres_url}?search_path={schema}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text("\n".join(FIGURES) + "\n")
    terminalreporter.section("fault suite figures")
    for line in FIGURES:
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(written to {SUMMARY.relative_to(ROOT)})")
