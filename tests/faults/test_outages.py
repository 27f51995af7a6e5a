"""Outages of what the service depends on: the broker, the PostgreSQL store, the webhook. Each
ends with the destination equal to the model, key by key, and the process never restarted."""

from __future__ import annotations

import asyncio
import random
import time

from tests.faults.harness import Cluster, Load, Mirror, TimedReceiver, env_float, figure

KEYS = 2000
CONVERGE = 90.0
BROKER_DOWN = env_float("FAULTS_BROKER_DOWN_SECONDS", 15.0)
STORE_DOWN = env_float("FAULTS_STORE_DOWN_SECONDS", 10.0)
PHASE = env_float("FAULTS_WEBHOOK_PHASE_SECONDS", 10.0)


async def stream_for(load: Load, seconds: float, rate: float = 20) -> None:
    deadline = time.monotonic() + seconds
    await load.run(rate, stop=lambda: time.monotonic() > deadline)


async def test_broker_killed_and_restarted_converges(
    cluster: Cluster, receiver: TimedReceiver
) -> None:
    mirror = Mirror(receiver)
    service = await cluster.service()
    load = Load(cluster, KEYS, random.Random(1))
    await stream_for(load, 5)
    await mirror.converge(cluster.model, CONVERGE, "convergence before the fault")

    await cluster.servers.kill_kafka()
    await asyncio.sleep(BROKER_DOWN)
    assert service.alive, "the service exited while the broker was down\n" + cluster.logs()
    await cluster.servers.start_kafka()
    back = time.monotonic()
    await stream_for(load, 5)
    took = await mirror.converge(cluster.model, CONVERGE, "convergence after the broker")
    produced = time.monotonic() - back

    figure(
        f"broker kill -9, down {BROKER_DOWN:.0f}s then restarted: converged "
        f"{took:.2f}s after the last event ({produced:.1f}s after the broker answered); "
        f"{mirror.duplicates()}"
    )
    assert service.alive and service.pid == cluster.services[0].pid


async def _store_outage(
    cluster: Cluster, receiver: TimedReceiver, postgres_store: str
) -> tuple[float, list[int], float]:
    """Stream through a kill -9 of the store and its restart; (seconds to converge after the
    stream, /readyz answers seen while the store was down, seconds to /readyz 200 after)."""
    cluster.env["SYNC_DATABASE_URL"] = postgres_store
    mirror = Mirror(receiver)
    service = await cluster.service()
    load = Load(cluster, KEYS, random.Random(2))
    await stream_for(load, 3)

    stopping = False
    stream = asyncio.create_task(load.run(20, stop=lambda: stopping))
    try:
        await cluster.servers.kill_postgres()
        down_until = time.monotonic() + STORE_DOWN
        seen: list[int] = []
        while time.monotonic() < down_until:
            seen.append(await service.readyz())
            await asyncio.sleep(0.5)
        await cluster.servers.start_postgres()
        back = time.monotonic()
        while await service.readyz() != 200:
            assert time.monotonic() - back < CONVERGE, "/readyz not 200 after the store came back"
            await asyncio.sleep(0.2)
        ready = time.monotonic() - back
        await asyncio.sleep(3)
    finally:
        stopping = True
        await stream
    took = await mirror.converge(cluster.model, CONVERGE, "convergence after the store")
    figure(
        f"PostgreSQL store kill -9, down {STORE_DOWN:.0f}s then restarted: /readyz during "
        f"the outage {sorted(set(seen))}, 200 again {ready:.2f}s after restart, converged "
        f"{took:.2f}s after the stream; {mirror.duplicates()}"
    )
    assert service.alive, "the service exited while the store was down\n" + cluster.logs()
    assert service.pid == cluster.services[0].pid
    return took, seen, ready


async def test_store_killed_and_restarted_converges(
    cluster: Cluster, receiver: TimedReceiver, postgres_store: str
) -> None:
    await _store_outage(cluster, receiver, postgres_store)


async def test_store_outage_makes_readyz_503(
    cluster: Cluster, receiver: TimedReceiver, postgres_store: str
) -> None:
    _, seen, _ = await _store_outage(cluster, receiver, postgres_store)
    assert 503 in seen, f"/readyz answered {seen} while the store was down"
    assert 200 not in seen[2:], f"/readyz answered 200 while the store was down: {seen}"


async def test_webhook_503_then_401_then_timeouts_converges(
    cluster: Cluster, receiver: TimedReceiver, uid: str
) -> None:
    from tests.faults.harness import resources

    cluster.write_resources(resources(receiver.url, timeoutSeconds=1))
    receiver.slow = 2.5
    mirror = Mirror(receiver)
    await cluster.service()
    load = Load(cluster, KEYS, random.Random(3))
    await stream_for(load, 3)
    await mirror.converge(cluster.model, CONVERGE, "convergence before the faults")

    times: dict[str, float] = {}
    for fault in (503, 401, "timeout"):
        receiver.fault = fault
        await stream_for(load, PHASE)
        receiver.fault = None
        times[str(fault)] = await mirror.converge(cluster.model, CONVERGE, f"convergence {fault}")
    figure(
        f"webhook {PHASE:.0f}s of 503, of 401, of timeouts (1 s): converged "
        + ", ".join(f"{k} {v:.2f}s" for k, v in times.items())
        + f" after each ended; {mirror.duplicates()}"
    )
    assert cluster.services[0].alive
