"""Starting with SYNC_MIGRATE_ON_START off, on SQLite and PostgreSQL: the store reports its
schema version without migrating, a start waits for a schema that is behind and refuses one
that is ahead."""

from __future__ import annotations

import asyncio

import pytest

from service import app
from service.app import SchemaMismatch, open_store_checked
from service.config import Settings
from service.core.models import RunStatus
from service.store.base import RunQuery
from tests.contract.conftest import StoreFactory, make_store
from tests.contract.test_store import catalog, run


def no_migrate(url: str) -> Settings:
    return Settings(migrate_on_start=False, database_url=url)


async def test_a_start_waits_for_the_migration_then_opens_without_migrating(
    store_url: str, open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "SCHEMA_WAIT_SECONDS", 0.05)
    waiting = make_store(store_url)
    current, expected = await waiting.schema_status()  # type: ignore[attr-defined]
    assert current == 0 and expected >= 8
    starting = asyncio.create_task(open_store_checked(waiting, no_migrate(store_url)))
    await asyncio.sleep(0.3)
    assert not starting.done()  # nothing migrated it: still waiting

    migrated = await open_store()  # `sync-service migrate`, as another process would
    await catalog(migrated)
    await asyncio.wait_for(starting, 10)
    try:
        assert await waiting.schema_status() == (expected, expected)  # type: ignore[attr-defined]
        await waiting.save_run(run(1, 0, status=RunStatus.SUCCESS))  # it works
        assert [r.id for r in (await migrated.list_runs(RunQuery("1")))[0]] == ["1"]
    finally:
        await waiting.close()


async def test_a_start_refuses_a_schema_newer_than_the_release(
    store_url: str, open_store: StoreFactory
) -> None:
    newer = await open_store()
    async with newer._d.tx() as conn:  # type: ignore[attr-defined]
        await conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    await newer.close()
    store = make_store(store_url)
    with pytest.raises(SchemaMismatch, match="version 999, newer than this release's"):
        await open_store_checked(store, no_migrate(store_url))
    await store.close()
