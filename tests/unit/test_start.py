"""open_store_checked: migrate at start, or with SYNC_MIGRATE_ON_START off wait for a schema
that is behind and refuse one that is ahead."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.app import SchemaMismatch, open_store_checked
from service.config import Settings


class Store:
    def __init__(self, versions: list[int], expected: int) -> None:
        self.versions = versions
        self.expected = expected
        self.opened: list[bool] = []

    async def schema_status(self) -> tuple[int, int]:
        current = self.versions.pop(0) if len(self.versions) > 1 else self.versions[0]
        return current, self.expected

    async def open(self, migrate: bool = True) -> None:
        self.opened.append(migrate)


def settings(migrate: bool) -> Settings:
    return Settings(migrate_on_start=migrate)


async def test_migrations_run_at_start_by_default() -> None:
    store = Store([1], 6)
    await open_store_checked(store, settings(True))  # type: ignore[arg-type]
    assert store.opened == [True]


async def test_a_schema_newer_than_the_release_stops_the_start() -> None:
    store = Store([7], 6)
    with pytest.raises(SchemaMismatch, match="version 7, newer than this release's 6"):
        await open_store_checked(store, settings(False))  # type: ignore[arg-type]
    assert store.opened == []


async def test_a_schema_behind_is_waited_for_without_migrating(monkeypatch: Any) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("service.app.asyncio.sleep", sleep)
    store = Store([5, 5, 6], 6)
    await open_store_checked(store, settings(False))  # type: ignore[arg-type]
    assert len(sleeps) == 2
    assert store.opened == [False]
