"""kill -9 of the only replica (SQLite store) at random moments of a stream: nothing lost, and
delivery resumes seconds after each restart."""

from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

from tests.faults.harness import Cluster, Load, Mirror, TimedReceiver, env_float, figure

KILLS = int(os.environ.get("FAULTS_KILLS", "10"))
KEYS = 3000
#: Delivery must resume this soon after a restarted process answers /readyz.
RESUME_TARGET = env_float("FAULTS_RESUME_SECONDS", 5.0)
#: Past this, the process is taken for stuck and the test stops waiting.
RESUME_GIVE_UP = 30.0


@pytest.mark.timeout(600)
async def test_kill_9_at_random_moments_loses_nothing(
    cluster: Cluster, receiver: TimedReceiver
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    mirror = Mirror(receiver)
    service = await cluster.service()
    load = Load(cluster, KEYS, rng)
    # Every key once first, so that deletes and updates meet rows the destination holds.
    for start in range(0, KEYS, 100):
        await cluster.event(
            "upsert", [{"id": k, "v": f"v0-{k}"} for k in range(start, start + 100)]
        )
    await mirror.converge(cluster.model, 120, "the initial load")

    stopping = False
    stream = asyncio.create_task(load.run(rate=30, stop=lambda: stopping))
    resumed: list[float] = []
    try:
        for n in range(KILLS):
            await asyncio.sleep(rng.uniform(0.5, 4.0))
            await service.kill()
            service = await cluster.service(name=f"service-{n + 1}")
            ready = service.ready_at
            deadline = ready + RESUME_GIVE_UP
            while (first := receiver.first_request_after(ready)) is None:
                if stream.done():
                    stream.result()
                assert time.monotonic() < deadline, (
                    f"restart {n + 1}: no delivery within {RESUME_GIVE_UP:.0f}s of /readyz\n"
                    + cluster.logs()
                )
                await asyncio.sleep(0.05)
            resumed.append(first - ready)
    finally:
        stopping = True
        await stream
    took = await mirror.converge(cluster.model, 120, "convergence after the last restart")

    diff = mirror.diff(cluster.model)
    figure(
        f"kill -9 x{KILLS} (SQLite, seed {seed}, {load.events} events over {KEYS} keys): "
        f"resume after /readyz max {max(resumed):.2f}s, mean "
        f"{sum(resumed) / len(resumed):.2f}s, each {[round(r, 2) for r in resumed]}; "
        f"converged {took:.2f}s after the stream; {mirror.duplicates()}"
    )
    assert diff.clean, str(diff)
    slow = [round(r, 2) for r in resumed if r > RESUME_TARGET]
    assert not slow, f"delivery resumed later than {RESUME_TARGET}s after /readyz: {slow}"
