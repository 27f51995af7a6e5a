"""Adaptive concurrency and the rate limit, driven without sleeping."""

from __future__ import annotations

import asyncio

from service.runner.pacing import AdaptiveConcurrency, RateLimit


async def fill(limiter: AdaptiveConcurrency) -> None:
    while limiter.in_flight < limiter.limit:
        await limiter.acquire()


async def test_limit_rises_by_one_per_window_while_saturated_and_latency_steady() -> None:
    limiter = AdaptiveConcurrency(maximum=5)
    history = []
    for window in range(8):
        await fill(limiter)
        limiter.observe(0.1, now=window * 0.2)
        history.append(limiter.limit)
        await limiter.release()
    assert history == [2, 3, 4, 5, 5, 5, 5, 5]


async def test_answers_within_one_window_change_the_limit_once() -> None:
    limiter = AdaptiveConcurrency(maximum=50)
    await fill(limiter)
    limiter.observe(0.1, now=0.1)  # first window: 1 -> 2
    await fill(limiter)
    for i in range(10):
        limiter.observe(0.1, now=0.11 + i * 0.001)  # all inside the next 0.1 s window
    assert limiter.limit == 2
    limiter.observe(0.1, now=0.25)
    assert limiter.limit == 3


async def test_limit_does_not_rise_when_not_saturated() -> None:
    limiter = AdaptiveConcurrency(maximum=5)
    limiter.observe(0.1, now=1.0)
    limiter.observe(0.1, now=2.0)
    assert limiter.limit == 1


async def test_backpressure_and_slow_answers_cut_the_limit() -> None:
    limiter = AdaptiveConcurrency(maximum=100)
    now = 0.0
    for _ in range(30):
        await fill(limiter)
        now += 0.2
        limiter.observe(0.1, now=now)
    assert limiter.limit == 31
    limiter.observe(0.1, now=now + 0.2, backpressure=True)
    assert limiter.limit == 27
    limiter.observe(1.0, now=now + 0.4)  # ten times the average
    assert limiter.limit == 24
    for i in range(40):
        limiter.observe(None, now=now + 1 + i, backpressure=True)
    assert limiter.limit == 1


async def test_acquire_waits_for_a_free_slot() -> None:
    limiter = AdaptiveConcurrency(maximum=1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    await limiter.release()
    await asyncio.wait_for(waiter, 1)
    assert limiter.in_flight == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_rate_limit_allows_a_burst_then_paces() -> None:
    clock = FakeClock()
    rate = RateLimit(4, clock.monotonic, clock.sleep)
    waits = [await rate.acquire() for _ in range(8)]
    assert waits[:4] == [0.0, 0.0, 0.0, 0.0]
    assert all(abs(w - 0.25) < 1e-9 for w in waits[4:])
    assert abs(clock.now - 101.0) < 1e-9
    clock.now += 10  # idle time refills the bucket, up to the burst
    assert [await rate.acquire() for _ in range(4)] == [0.0] * 4
    assert await rate.acquire() > 0


async def test_a_rows_budget_charges_each_request_its_row_count() -> None:
    clock = FakeClock()
    rows = RateLimit(100, clock.monotonic, clock.sleep)
    assert await rows.acquire(60) == 0.0
    assert abs(await rows.acquire(60) - 0.2) < 1e-9  # 20 rows short at 100 rows/s
    assert abs(await rows.acquire(250) - 2.5) < 1e-9  # one request larger than the burst
