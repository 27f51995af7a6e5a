"""The real `sync-service serve` process killed with SIGKILL in the middle of a run, then
started again on the same SQLite store: the run it left open ends `interrupted` with a status
event, and its rows go at once (no lease of the dead process stands in the way)."""

from __future__ import annotations

import signal
import time

import aiohttp
import orjson
import pytest

from tests.e2e.conftest import Harness
from tests.e2e.test_service import read_topic, user
from tests.support import wait_for

pytestmark = pytest.mark.kafka

TOKEN = "e2e-token-restart"


async def runs(base: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/syncs/1/runs", headers=headers) as r,
    ):
        assert r.status == 200
        return (await r.json())["data"]


async def test_a_run_left_by_a_killed_process_is_interrupted_and_its_rows_go_at_restart(
    e2e: Harness,
) -> None:
    e2e.env["SYNC_API_TOKENS"] = f"{TOKEN}=1"
    service = await e2e.service()
    e2e.receiver.delay = 60.0  # the delivery hangs: the run stays processing
    await e2e.event("upsert", [user(1), user(2)])
    await wait_for(lambda: bool(e2e.receiver.requests), what="the run to start delivering")
    (left,) = await runs(service.base)
    assert left["status"] == "processing"

    await service.stop(signal.SIGKILL)
    e2e.receiver.delay = 0.0
    restarted = await e2e.service()
    ready = time.monotonic()
    rows = await e2e.receiver.wait_rows(2, timeout=15)
    print(f"rows delivered {time.monotonic() - ready:.2f}s after the restart's /readyz")
    assert sorted(r["key"] for r in rows) == ["1", "2"]

    by_id = {r["id"]: r for r in await runs(restarted.base)}
    assert by_id[left["id"]]["status"] == "interrupted"
    assert by_id[left["id"]]["finishedAt"] is not None
    events = [orjson.loads(r.value) for r in await read_topic(e2e.kafka, e2e.status_topic, 1)]
    await wait_for(
        lambda: _interrupted_event(e2e, str(left["id"]), events), what="the interrupted event"
    )


async def _interrupted_event(e2e: Harness, run_id: str, seen: list[dict[str, object]]) -> bool:
    if not any(_is_interrupted(e, run_id) for e in seen):
        records = await read_topic(e2e.kafka, e2e.status_topic, len(seen) + 1, timeout=2)
        seen[:] = [orjson.loads(r.value) for r in records]
    return any(_is_interrupted(e, run_id) for e in seen)


def _is_interrupted(event: dict[str, object], run_id: str) -> bool:
    data = event.get("data")
    return (
        event.get("type") == "sync.run.interrupted"
        and isinstance(data, dict)
        and data.get("id") == run_id
    )
