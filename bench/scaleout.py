"""S5: two `sync-service serve` processes sharing one consumer group on the PostgreSQL store
and the postgres destination (S4's setup), reading S4's events from a topic of several
partitions where each event's record key is its first row's key, so the group spreads them.

Both processes start together, after a third has loaded the resources file into the store
(on an empty topic, outside the window). The window opens when the broker first describes the
group as Stable with a member (as for S4; the second member's arrival and the rebalance it
causes are part of the cost of scaling out) and closes when the two processes together have
delivered every row. CPU is both processes' over the window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench import postgres
from bench.context import Bench
from bench.measure import SERVICE_COUNTERS, Window, group_joined
from bench.service import POLL, ServiceFailed, ServiceProcess

PROCESSES = 2
#: A run that delivered more than this share of its rows before every process was a member
#: measured one process, not the group: it is reported as failed, not as a rate.
MOST_BEFORE_ALL_JOINED = 0.5
DELIVERED = "sync_rows_delivered_total"
LABELS = {"destination_type": "postgres", "outcome": "delivered"}


async def run_scaleout(bench: Bench, name: str, topic: str, rows: int) -> dict[str, Any]:
    within = 60 + rows / bench.profile.floor_rows_per_second
    group = f"{topic}-{name}"
    async with postgres.Schema() as url, contextlib.AsyncExitStack() as stack:
        await postgres.create_target(url.rsplit("search_path=", 1)[1])
        # Replicas that load one resources file into an empty store at the same moment can
        # collide on its slugs; a first process on an empty topic loads it before the two start.
        empty = await bench.topic(f"{name}-prime")
        async with bench.service(
            f"{name}-prime", topic=empty, database_url=url, destination=bench.postgres(url)
        ) as prime:
            await prime.wait_ready()
        services: list[ServiceProcess] = [
            await stack.enter_async_context(
                bench.service(
                    f"{name}-{n}",
                    topic=topic,
                    database_url=url,
                    destination=bench.postgres(url),
                    group=group,
                )
            )
            for n in range(PROCESSES)
        ]
        all_joined = asyncio.create_task(group_joined(group, members=PROCESSES))
        try:
            joined = await group_joined(group)
            cpu_at_join = [s.cpu_seconds() for s in services]
            ready = [await s.wait_ready() for s in services]
            everyone = await asyncio.wait_for(asyncio.shield(all_joined), 60)
        finally:
            all_joined.cancel()
        # What was delivered before both took part, for the rate of the two together.
        both_at = time.time()
        at_both = [await s.scrape() for s in services]
        both_before = sum(x.total(DELIVERED, **LABELS) for x in at_both)
        if both_before > MOST_BEFORE_ALL_JOINED * rows:
            raise ServiceFailed(
                f"{name}: {both_before:.0f} of {rows} rows were delivered before all "
                f"{PROCESSES} processes were members ({everyone - joined:.1f} s after the "
                "first joined): too few rows to measure the group; run more (--rows)"
            )
        done, scrapes = await _wait_delivered(services, rows, within)
        cpu = sum(s.cpu_seconds() - c for s, c in zip(services, cpu_at_join, strict=True))
        per_process = [
            {
                "delivered": scrape.total(DELIVERED, **LABELS),
                "events_consumed": scrape.total("sync_events_consumed_total"),
                "runs": scrape.by_label("sync_runs_total", "status"),
            }
            for scrape in scrapes
        ]
        counters = {k: sum(s.total(k) for s in scrapes) for k in SERVICE_COUNTERS}
    spawned = min(s.spawned_at for s in services)
    window = Window(rows, spawned, joined, joined, done, cpu)
    window.details.update(
        {
            "processes": PROCESSES,
            "all_members_joined_after_s": round(everyone - joined, 3),
            # From the moment both were members: rows delivered after it over the time left.
            "rows_delivered_before_both_joined": both_before,
            "rows_per_s_with_both": (
                round((rows - both_before) / (done - both_at), 1) if both_before < rows else None
            ),
            "ready_after_join_s": round(max(ready) - joined, 3),
            "per_process": per_process,
            "service": counters,
        }
    )
    return window.figures()


async def _wait_delivered(
    services: list[ServiceProcess], expected: int, within: float
) -> tuple[float, list[Any]]:
    """Polls both processes' /metrics until their deliveries add up to `expected`."""
    started = time.monotonic()
    while True:
        scrapes = [await s.scrape() for s in services]
        now = time.time()
        total = sum(s.total(DELIVERED, **LABELS) for s in scrapes)
        if total >= expected:
            return now, scrapes
        refused = sum(s.total("sync_events_invalid_total", reason="key_mismatch") for s in scrapes)
        if refused:  # these rows will never be delivered: say so now, not at the timeout
            raise ServiceFailed(
                f"S5: {refused:.0f} events refused (key_mismatch): this service takes only the "
                "model id as a record key; --s5-keys none sends keyless records"
            )
        if time.monotonic() - started > within:
            tails = "\n".join(s.log_tail(1500) for s in services)
            raise ServiceFailed(
                f"S5: {total:.0f} of {expected} rows delivered after {within:.0f}s:\n{tails}"
            )
        await asyncio.sleep(POLL if total == 0 or total > 0.9 * expected else 0.25)
