"""Whatever an event row holds, ingest hands the real stores only what they can write: a row
either lands as pending or is rejected with a reason; the batch never fails as a whole."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import open_store
from service.config import Settings
from service.core.events import InvalidEvent
from service.core.metrics import Metrics
from service.core.rows import SyncRoute
from service.ingest import Ingest
from service.source.decode import decode_event
from service.source.kafka import _NON_FINITE_HINT
from service.store.base import Store

POSTGRES = os.environ.get("SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync")
ROUTES = {"1": (SyncRoute("1", "id", ("id", "v")),)}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["\x00", "a\x00b", "NaN", "", "\U0010ffff", "x" * 600])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        schema = None
    else:
        import asyncpg

        schema = f"ingest_{uuid.uuid4().hex[:10]}"
        admin = await asyncpg.connect(POSTGRES, timeout=5)
        await admin.execute(f"CREATE SCHEMA {schema}")
        await admin.close()
        url = f"{POSTGRES}?search_path={schema}"
    s = open_store(Settings(database_url=url))
    await s.open()
    try:
        yield s
    finally:
        await s.close()
        if schema is not None:
            import asyncpg

            admin = await asyncpg.connect(POSTGRES, timeout=5)
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            await admin.close()


async def test_any_rows_are_stored_or_rejected_never_a_failed_batch(store: Store) -> None:
    ingest = Ingest(store, Metrics())
    seen: list[int] = []

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(st.fixed_dictionaries({"id": _values, "v": _values}), min_size=1, max_size=5))
    def check(rows: list[dict[str, Any]]) -> None:
        raw = json.dumps({"modelId": "1", "op": "upsert", "rows": rows}).encode()
        try:
            event = decode_event(None, raw)
        except InvalidEvent:
            return
        suspect = {0} if _NON_FINITE_HINT.search(raw) else set()
        parts = ingest.prepare([event], ROUTES, suspect=suspect)
        seen.append(len(parts))
        pending.append(parts)

    pending: list[Any] = []
    check()
    for parts in pending:
        result = await ingest.store(parts)  # raises if the store refuses what ingest kept
        assert result.rows + result.rejected >= 1
    assert seen
