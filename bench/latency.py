"""L1: freshness of a continuous sync (lingerMs 0) under open-loop load at fractions of S1's
1-row rate. 1-row events carry `emittedAt` (and the row's `updated_at`) set when produced;
the receiver notes, per row, its arrival time minus that stamp."""

from __future__ import annotations

import logging
import time
from typing import Any

from bench.context import Bench
from bench.events import LiveEvents, PacedProducer
from bench.measure import wait_metric

log = logging.getLogger("bench")

DELIVERED = "sync_rows_delivered_total"


async def run_latency(bench: Bench, s1_rate: float) -> dict[str, Any]:
    profile = bench.profile
    topic = await bench.topic("l1")
    destination = bench.webhook()
    levels = []
    async with bench.service(
        "L1", topic=topic, database_url=bench.sqlite_url("l1"), destination=destination
    ) as service:
        await service.wait_ready()
        await bench.receiver.control(latency=True, reset=True, stall=False)
        labels = {"destination_type": "webhook", "outcome": "delivered"}
        async with PacedProducer(topic, LiveEvents(first_id=10_000_000)) as paced:
            for load in profile.latency_loads:
                await bench.receiver.control(reset=True)
                offered = load * s1_rate
                achieved = await paced.run(offered, profile.latency_seconds)
                ended = time.time()
                _, drained = await wait_metric(
                    service, DELIVERED, labels, paced.sent, 60 + profile.latency_seconds
                )
                stats = await bench.receiver.stats()
                level = {
                    "load": load,
                    "offered_rows_per_s": round(offered, 1),
                    "produced_rows_per_s": round(achieved, 1),
                    "rows": stats["rows"],
                    "latency_ms": stats["latency_ms"],
                    "drain_seconds_after_load": round(drained - ended, 3),
                }
                levels.append(level)
                log.info("L1 at %.0f%%: %s", 100 * load, level["latency_ms"])
        await bench.receiver.control(latency=False, reset=True)
    return {
        "s1_rows_per_s": round(s1_rate, 1),
        "seconds_per_level": profile.latency_seconds,
        "levels": levels,
    }
