"""A template bomb against the runner: its rows are rejected with the reason, and the event
loop keeps running while they render (every other sync, the API and the consumer live there)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.core.models import RunStatus, Sync, SyncConfiguration, referenced_columns
from tests.integration.test_runner_webhook import Harness, user

#: Within the iteration, output and variable limits; stopped by the CPU-time limit.
BOMB = (
    "{% assign a = 'a,b,c,d' | split: ',' %}{% for i in (1..9999) %}"
    + "{{ a | join: '-' | split: '-' | join: ',' | size | modulo: 1 }}" * 20
    + "{% endfor %}"
)


async def use_mappings(harness: Harness, mappings: list[dict[str, Any]]) -> None:
    await harness.setup(mode="upsert")
    configuration = {"mode": "upsert", "mappings": mappings}
    parsed = SyncConfiguration.model_validate(configuration)
    harness.sync = Sync(
        **{
            **harness.sync.model_dump(),
            "configuration": configuration,
            "referenced_columns": referenced_columns("id", parsed),
        }
    )
    await harness.store.upsert(harness.sync)


async def test_a_template_bomb_rejects_its_rows_and_the_event_loop_keeps_running(
    harness: Harness,
) -> None:
    mappings = [{"from": "id", "to": "id"}, {"type": "template", "to": "x", "template": BOMB}]
    await use_mappings(harness, mappings)
    rows = 40
    await harness.send("upsert", [user(i) for i in range(rows)])

    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        run = await harness.run()
    finally:
        done.set()
        await ticking
    gaps.sort()
    print(
        f"{len(gaps)} turns of the loop while {rows} rows rendered; gaps between them: "
        f"median {gaps[len(gaps) // 2] * 1000:.1f} ms, p99 {gaps[len(gaps) * 99 // 100] * 1000:.1f}"
        f" ms, longest {gaps[-1] * 1000:.1f} ms"
    )
    assert run.status is RunStatus.WARNING
    assert run.failed_rows.added_count == rows
    assert harness.receiver.rows == []
    page = await harness.store.pending_page("7", 0, 10**9, 100)
    assert len(page) == rows
    assert all(r.error and "CPU time" in r.error for r in page)
    # Rendered on the event loop, the run would leave the ticker a handful of turns at most.
    assert len(gaps) > rows


async def test_templates_within_their_limits_render_off_the_loop_as_before(
    harness: Harness,
) -> None:
    template = (
        "{% for t in tags %}{{ t | upcase }}{% unless forloop.last %},{% endunless %}{% endfor %}"
    )
    await use_mappings(
        harness,
        [{"from": "id", "to": "id"}, {"type": "template", "to": "tags", "template": template}],
    )
    await harness.send("upsert", [user(i, tags=["a", "b"]) for i in range(70)])
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert len(harness.receiver.rows) == 70
    assert {r["data"]["tags"] for r in harness.receiver.rows} == {"A,B"}
