"""The `store` fixture: every contract test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from service.store.base import Store
from service.store.sqlite import SqliteStore

POSTGRES_URL = os.environ.get(
    "SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync"
)

StoreFactory = Callable[..., Awaitable[Store]]


def make_store(url: str, **options: Any) -> Store:
    if url.startswith(("postgresql://", "postgres://")):
        from service.store.postgres import PostgresStore

        return PostgresStore(url, **options)
    return SqliteStore(url, **options)


def _with_search_path(url: str, schema: str) -> str:
    """asyncpg passes unknown URL parameters to the server as settings."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


async def _postgres_admin(url: str) -> Any:
    import asyncpg

    from service.store.pgconnect import mask_url

    try:
        return await asyncpg.connect(url, timeout=5)
    except Exception as exc:
        why = repr(exc)
    pytest.fail(  # a missing server is a failure, never a skip
        f"no PostgreSQL server at {mask_url(url)} ({why}); run `make pg-up` "
        "(or set SYNC_TEST_POSTGRES_URL)",
        pytrace=False,
    )


@pytest.fixture
async def postgres_url(uid: str) -> AsyncIterator[str]:
    """The test server's URL, confined to a new schema that is dropped afterwards."""
    schema = f"contract_{uid}"
    admin = await _postgres_admin(POSTGRES_URL)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        yield _with_search_path(POSTGRES_URL, schema)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store location: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def open_store(store_url: str) -> AsyncIterator[StoreFactory]:
    """Opens more stores on the same location (another replica); all are closed after."""
    opened: list[Store] = []

    async def factory(**options: Any) -> Store:
        store = make_store(store_url, **options)
        opened.append(store)  # closed even when open fails half way
        await store.open()
        return store

    yield factory
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_store: StoreFactory) -> Store:
    return await open_store()
