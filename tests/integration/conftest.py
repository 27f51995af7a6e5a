"""The runner harness over a real SQLite store and a real webhook receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from service.store.sqlite import SqliteStore
from tests.contract.conftest import open_store, postgres_url, store_url  # noqa: F401 - fixtures
from tests.integration.test_runner_webhook import Harness
from tests.support import Receiver


@pytest.fixture
async def harness(tmp_path: Path, receiver: Receiver) -> AsyncIterator[Harness]:
    store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    await store.open()
    h = Harness(store, receiver)
    yield h
    await h.runner.close()
    await store.close()
