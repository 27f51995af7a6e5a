"""Two replicas on one PostgreSQL store and one consumer group: when the one running the sync is
killed -9, the survivor delivers the sync's rows within a session timeout plus a lease TTL."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.faults.harness import Cluster, Load, Mirror, Service, TimedReceiver, env_float, figure

KEYS = 2000
#: Consumer session timeout plus lease TTL, as the service is configured by default.
FAILOVER = env_float("FAULTS_FAILOVER_SECONDS", 30.0)


async def delivered(service: Service) -> float:
    return await service.metric("sync_rows_delivered_total", {"outcome": "delivered"})


@pytest.mark.timeout(600)
async def test_survivor_takes_over_a_killed_replicas_sync(
    cluster: Cluster, receiver: TimedReceiver, postgres_store: str
) -> None:
    cluster.env["SYNC_DATABASE_URL"] = postgres_store
    mirror = Mirror(receiver)
    first = await cluster.service("replica-a")
    second = await cluster.service("replica-b")
    load = Load(cluster, KEYS, random.Random(4))
    for _ in range(60):
        await load.step()
    await mirror.converge(cluster.model, 90, "convergence with two replicas")

    # The replica whose delivered-rows counter moves runs the sync now.
    before = {s.pid: await delivered(s) for s in (first, second)}
    for _ in range(20):
        await load.step()
    await mirror.converge(cluster.model, 90, "convergence with two replicas")
    after = {s.pid: await delivered(s) for s in (first, second)}
    running = next(s for s in (first, second) if after[s.pid] > before[s.pid])
    survivor = second if running is first else first

    await running.kill()
    killed = time.monotonic()
    stopping = False
    stream = asyncio.create_task(load.run(20, stop=lambda: stopping))
    await asyncio.sleep(5)
    stopping = True
    await stream
    try:
        await mirror.converge(cluster.model, FAILOVER + killed - time.monotonic(), "failover")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None
    took = time.monotonic() - killed
    first_after = receiver.first_request_after(killed)
    figure(
        f"two replicas on PostgreSQL, the one running the sync killed -9: survivor's first "
        f"delivery {first_after - killed if first_after else float('nan'):.2f}s and "
        f"convergence {took:.2f}s after the kill; {mirror.duplicates()}"
    )
    assert survivor.alive
