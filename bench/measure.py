"""Timing windows: one method for the baseline and the service alike.

A window runs from the moment the consumer has joined its group to the moment the last row is
done. The join is seen from the broker for both: the first time DescribeGroups reports the
group Stable with a member, polled every 20 ms from process start (the service's own /readyz
comes later: its event loop is busy with the first fetch by then). The end: the last record
decoded (S0), or the completion counter on /metrics reaching the expected count (the service,
polled every 20 ms near the end). Events are produced before the consumer starts, so the
window covers consuming and processing only. Two more windows are reported beside it: from
the first event consumed, and from process start (spawn)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from bench.service import POLL, Scrape, ServiceFailed, ServiceProcess
from bench.settings import KAFKA


@dataclass(slots=True)
class Window:
    rows: int
    spawned: float  # wall-clock timestamps (time.time())
    joined: float
    first: float
    done: float
    #: CPU time of the process from the join (the service: from readiness) to `done`.
    cpu_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.done - self.joined, 1e-9)

    def figures(self) -> dict[str, Any]:
        seconds = self.done - self.joined
        return {
            "rows": self.rows,
            "rows_per_s": round(self.rows_per_second, 1),
            "seconds": round(seconds, 3),
            "rows_per_s_from_first_consumed": round(
                self.rows / max(self.done - self.first, 1e-9), 1
            ),
            "seconds_from_spawn": round(self.done - self.spawned, 3),
            "rows_per_s_from_spawn": round(self.rows / max(self.done - self.spawned, 1e-9), 1),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_utilisation": round(self.cpu_seconds / max(seconds, 1e-9), 3),
            "rows_per_cpu_s": round(self.rows / max(self.cpu_seconds, 1e-9), 1),
            **self.details,
        }


#: What the service counts while it runs, kept with each throughput result.
SERVICE_COUNTERS = (
    "sync_events_consumed_total",
    "sync_rows_ingested_total",
    "sync_rows_unchanged_total",
    "sync_rows_rejected_total",
    "sync_store_transaction_seconds_sum",
    "sync_store_transaction_seconds_count",
    "sync_destination_request_seconds_sum",
    "sync_destination_request_seconds_count",
    "sync_batch_rows_count",
    "sync_destination_concurrency_limit",
)


async def group_joined(group: str, within: float = 60.0, members: int = 1) -> float:
    """When the broker first describes `group` as Stable with `members` members or more
    (wall clock)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA)
    await admin.start()
    deadline = time.monotonic() + within
    try:
        while True:  # a broker started a moment ago may have no coordinator to name yet
            try:
                coordinator = await admin.find_coordinator(group)
                break
            except GroupCoordinatorNotAvailableError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(POLL)
        while time.monotonic() < deadline:
            [response] = await admin.describe_consumer_groups([group], coordinator)
            _, _, state, _, _, group_members, *_ = response.groups[0]
            if state == "Stable" and len(group_members) >= members:
                return time.time()
            await asyncio.sleep(POLL)
    finally:
        await admin.close()
    raise TimeoutError(f"consumer group {group} did not become Stable in {within:.0f}s")


async def service_window(
    service: ServiceProcess,
    expected: int,
    metric: str,
    labels: dict[str, str],
    within: float,
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> Window:
    """Waits for the group join and readiness, then for `metric{labels}` to reach `expected`.
    Call it right after `service.start()`."""
    joining = asyncio.create_task(group_joined(service.group))
    try:
        ready = await service.wait_ready()
        # The next poll sees the group Stable, if the last one did not yet (20 ms apart).
        joined = min(ready, await asyncio.wait_for(asyncio.shield(joining), 5))
    except TimeoutError:
        joined = ready  # not seen from the broker: readiness is the next best mark
    finally:
        joining.cancel()
    cpu_at_ready = service.cpu_seconds()
    if on_ready is not None:
        await on_ready()
    seen: dict[str, float] = {}

    def watch(scrape: Scrape, now: float) -> None:
        consumed = scrape.total("sync_events_consumed_total")
        seen.setdefault("consumed_at_ready", consumed)
        if consumed > 0:
            seen.setdefault("first", now)

    scrape, done = await wait_metric(service, metric, labels, expected, within, watch)
    cpu = service.cpu_seconds() - cpu_at_ready
    details = {
        "ready_after_join_s": round(ready - joined, 3),
        "events_consumed_at_ready": seen["consumed_at_ready"],
        "service": {name: scrape.total(name) for name in SERVICE_COUNTERS},
        "rows_planned": scrape.by_label("sync_rows_planned_total", "op"),
        "rows_delivered": scrape.by_label("sync_rows_delivered_total", "outcome"),
        "runs": scrape.by_label("sync_runs_total", "status"),
    }
    first = seen.get("first", done)
    return Window(expected, service.spawned_at, joined, first, done, cpu, details)


async def wait_metric(
    service: ServiceProcess,
    metric: str,
    labels: dict[str, str],
    expected: float,
    within: float,
    watch: Callable[[Scrape, float], None] | None = None,
) -> tuple[Scrape, float]:
    """Polls /metrics until `metric{labels}` reaches `expected`; returns the last scrape and
    the wall-clock time it was taken."""
    started = time.time()
    deadline = time.monotonic() + within
    while True:
        scrape = await service.scrape()
        now = time.time()
        if watch is not None:
            watch(scrape, now)
        value = scrape.total(metric, **labels)
        if value >= expected:
            return scrape, now
        if time.monotonic() > deadline:
            raise ServiceFailed(
                f"{service.name}: {metric} at {value:.0f} of {expected:.0f} after "
                f"{within:.0f}s:\n{service.log_tail()}"
            )
        await asyncio.sleep(_next_poll(value, expected, now - started))


def _next_poll(value: float, expected: float, elapsed: float) -> float:
    """20 ms near the end (and before anything is done), up to 250 ms in the middle, so the
    polls themselves cost the service next to nothing."""
    if value <= 0:
        return POLL
    remaining = elapsed * (expected - value) / value
    return min(0.25, max(POLL, remaining / 4))
