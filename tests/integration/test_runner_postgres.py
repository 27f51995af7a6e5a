"""The runner and the postgres destination against a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import functools
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.core.interfaces import RunRequest, SystemClock
from service.core.metrics import Metrics
from service.core.models import Destination, Model, RunStatus, Sync
from service.destinations.registry import DestinationContext, open_destination
from service.ingest import Ingest
from service.router import build_routes
from service.runner.retry import RetryPolicy
from service.runner.runner import SyncRunner
from service.store.sqlite import SqliteStore
from tests.integration.test_runner_webhook import RecordingReporter
from tests.support import LOCAL_ONLY, change

pytestmark = pytest.mark.postgres

POSTGRES_URL = os.environ.get(
    "SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync"
)


@pytest.fixture
async def target() -> AsyncIterator[str]:
    table = f"pg_target_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(POSTGRES_URL)
    except Exception as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES_URL} ({exc!r}); run `make pg-up`")
    await conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, email text NOT NULL)")
    await conn.close()
    yield table
    conn = await asyncpg.connect(POSTGRES_URL)
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.close()


async def test_a_killed_connection_mid_run_is_retried_and_the_run_recovers(
    tmp_path: Path, target: str
) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    metrics = Metrics()
    runner = SyncRunner(
        store,
        functools.partial(open_destination, context=DestinationContext("127.0.0.1:9", LOCAL_ONLY)),
        RecordingReporter(),
        metrics,
        SystemClock(),
        RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=0.2),
    )
    try:
        await store.upsert(Model(id="1", name="u", slug="u", primary_key="id"))
        await store.upsert(
            Destination(
                id="1",
                name="pg",
                slug="pg",
                type="postgres",
                configuration={"dsn": POSTGRES_URL, "table": target, "batchSize": 50},
            )
        )
        sync = Sync(
            id="1",
            slug="s",
            model_id="1",
            destination_id="1",
            schedule={"type": "manual"},
            configuration={
                "mode": "mirror",
                "mappings": [{"from": "id", "to": "id"}, {"from": "email", "to": "email"}],
            },
            primary_key="id",
            referenced_columns=["id", "email"],
        )
        await store.upsert(sync)
        ingest = Ingest(store, metrics)

        async def send(rows: list[dict[str, object]]) -> None:
            event = change({"modelId": "1", "op": "upsert", "rows": rows})
            await ingest.write([event], build_routes([sync]))

        await send([{"id": i, "email": f"u{i}@x"} for i in range(100)])
        assert (await runner.run(sync, RunRequest("test"))).status is RunStatus.SUCCESS

        # Mid-run, once the first new rows have landed, every server-side connection of the
        # destination's pool is killed.
        admin = await asyncpg.connect(POSTGRES_URL)
        await send([{"id": i, "email": f"v{i}@x"} for i in range(50, 3050)])
        running = asyncio.create_task(runner.run(sync, RunRequest("test")))
        while not await admin.fetchval(f"SELECT count(*) FROM {target} WHERE id >= 100"):
            await asyncio.sleep(0.005)
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'sync-service destination' AND pid <> pg_backend_pid()"
        )
        assert killed >= 1
        assert not running.done()
        run = await running
        assert run.status is RunStatus.SUCCESS
        assert run.successful_rows.added_count == 2950
        assert run.successful_rows.changed_count == 50
        rows = await admin.fetch(f"SELECT id, email FROM {target} ORDER BY id")
        await admin.close()
        assert len(rows) == 3050
        assert rows[120]["email"] == "v120@x"

        # A row the table refuses (NOT NULL) is refused alone; the rest of its batch lands.
        await send([{"id": 500, "email": None}, {"id": 501, "email": "ok@x"}])
        run = await runner.run(sync, RunRequest("test"))
        assert run.status is RunStatus.WARNING
        failed = (await store.list_pending("1", failed_only=True, limit=5, offset=0))[0]
        assert [r.key for r in failed] == ["500"]
        assert failed[0].error is not None
        assert "NotNullViolation" in failed[0].error
    finally:
        await runner.close()
        await store.close()
