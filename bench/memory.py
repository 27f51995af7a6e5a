"""M1: resident memory of the service while the webhook receiver stalls under load (the sync
keeps ingesting into the store), then the catch-up rate once it recovers.

The stalled receiver holds each request; the webhook gives up after `timeoutSeconds` and the
runner retries the batch (backoff capped at SYNC_DESTINATION_RETRY_MAX_SECONDS) for up to
SYNC_DESTINATION_MAX_ATTEMPTS, far longer than the stall: the run waits for the receiver
rather than failing its rows. RSS is VmRSS from /proc/<pid>/status, read every second."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from bench.context import Bench
from bench.events import LiveEvents, PacedProducer
from bench.measure import wait_metric
from bench.service import ServiceProcess

log = logging.getLogger("bench")

MIB = 1 << 20
DELIVERED = "sync_rows_delivered_total"
LABELS = {"destination_type": "webhook", "outcome": "delivered"}
#: The share of the stall after which RSS is taken as settled, for growth with the backlog.
SETTLED_SHARE = 0.1


class RssSampler:
    def __init__(self, service: ServiceProcess) -> None:
        self.service = service
        self.samples: list[tuple[float, float]] = []  # (wall time, MiB)
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.samples.append((time.time(), self.service.rss_bytes() / MIB))
            await asyncio.sleep(1.0)

    def now(self) -> float:
        return self.service.rss_bytes() / MIB

    def max_between(self, start: float, end: float) -> float:
        return max((mib for t, mib in self.samples if start <= t <= end), default=0.0)

    def first_after(self, start: float) -> float:
        return next((mib for t, mib in self.samples if t >= start), 0.0)


async def run_memory(bench: Bench, s1_rate: float) -> dict[str, Any]:
    profile = bench.profile
    topic = await bench.topic("m1")
    destination = bench.webhook(timeoutSeconds=profile.memory_timeout_seconds)
    env = {
        "SYNC_DESTINATION_MAX_ATTEMPTS": str(profile.memory_max_attempts),
        "SYNC_DESTINATION_RETRY_MAX_SECONDS": str(profile.memory_retry_max_seconds),
    }
    rate = profile.memory_load * s1_rate
    # With a backlog to reach, the stall's load is set by it instead of by S1's rate.
    backlog_rows = profile.memory_backlog_rows
    stall_rate = backlog_rows / profile.memory_stall_seconds if backlog_rows else rate
    async with bench.service(
        "M1",
        topic=topic,
        database_url=bench.sqlite_url("m1"),
        destination=destination,
        extra_env=env,
    ) as service:
        ready = await service.wait_ready()
        await bench.receiver.control(stall=False, reset=True)
        with RssSampler(service) as rss:
            rss_ready = rss.now()
            stop = asyncio.Event()
            async with PacedProducer(topic, LiveEvents(first_id=20_000_000)) as paced:
                producing = asyncio.create_task(paced.run(rate, float("inf"), stop))
                try:
                    await asyncio.sleep(profile.memory_warmup_seconds)
                    if stall_rate != rate:
                        stop.set()
                        await producing
                        stop = asyncio.Event()
                        producing = asyncio.create_task(paced.run(stall_rate, float("inf"), stop))
                    before = await service.scrape()
                    await bench.receiver.control(stall=True)
                    stall_start, rss_stall_start = time.time(), rss.now()
                    log.info("M1: receiver stalled for %.0fs", profile.memory_stall_seconds)
                    await asyncio.sleep(profile.memory_stall_seconds)
                    stall_end = time.time()
                    during = await service.scrape()
                finally:
                    await bench.receiver.control(stall=False)
                    stop.set()
                    produced_rate = await producing
            recovered = time.time()
            backlog = paced.sent - during.total(DELIVERED, **LABELS)
            _, first_after = await wait_metric(
                service, DELIVERED, LABELS, during.total(DELIVERED, **LABELS) + 1, 120
            )
            catch_up_timeout = 120 + backlog / profile.floor_rows_per_second
            end, done = await wait_metric(service, DELIVERED, LABELS, paced.sent, catch_up_timeout)
            max_stall = rss.max_between(stall_start, stall_end)
            # Whether memory grows with the rows waiting, apart from the step into the stall's
            # working set (the run over stored rows, fetches written to the store).
            settled = stall_start + SETTLED_SHARE * (stall_end - stall_start)
            rss_settled = rss.first_after(settled)
            max_late = rss.max_between(settled, stall_end)
            max_catch_up = rss.max_between(recovered, done)
            samples = [(round(t - ready, 1), round(mib, 1)) for t, mib in rss.samples]
    ingested = "sync_rows_ingested_total"
    return {
        "load_rows_per_s": round(rate, 1),
        "stall_load_rows_per_s": round(stall_rate, 1),
        "backlog_rows_asked": backlog_rows or None,
        "produced_rows_per_s": round(produced_rate, 1),
        "rows_produced": paced.sent,
        "stall_seconds": round(stall_end - stall_start, 1),
        "rows_ingested_during_stall": during.total(ingested) - before.total(ingested),
        "rows_delivered_during_stall": during.total(DELIVERED, **LABELS)
        - before.total(DELIVERED, **LABELS),
        "backlog_rows_at_recovery": backlog,
        "rss_mib_at_ready": round(rss_ready, 1),
        "rss_mib_at_stall_start": round(rss_stall_start, 1),
        "rss_mib_max_during_stall": round(max_stall, 1),
        "rss_growth_during_stall": round(max_stall / rss_stall_start, 3),
        "rss_mib_settled_in_stall": round(rss_settled, 1),
        "rss_growth_after_settled": round(max_late / rss_settled, 3) if rss_settled else None,
        "rss_mib_max_during_catch_up": round(max_catch_up, 1),
        "seconds_to_first_delivery_after_recovery": round(first_after - recovered, 3),
        "catch_up_seconds": round(done - recovered, 3),
        "catch_up_rows_per_s": round(backlog / max(done - recovered, 1e-9), 1),
        "retries": end.total("sync_destination_retries_total"),
        "runs": end.by_label("sync_runs_total", "status"),
        "rss_samples_mib": samples,
    }
