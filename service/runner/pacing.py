"""How fast the runner may call a destination: adaptive concurrency and a rate limit.

Both are plain objects with the clock passed in, so tests drive them without sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class AdaptiveConcurrency:
    """Additive increase, multiplicative decrease of the batches allowed in flight.

    Starts at 1 and judges the destination once per window of about one response time: if
    any answer in the window signalled back-pressure (429, 5xx, a timeout) or the window's
    mean response time rose more than `tolerance` above the moving average, the limit is cut
    by `decrease` (at least to 1); otherwise, if the limit was reached during the window, it
    rises by one (up to `maximum`). After Vector's adaptive request concurrency."""

    def __init__(
        self,
        maximum: int,
        *,
        decrease: float = 0.9,
        tolerance: float = 0.5,
        smoothing: float = 0.3,
    ) -> None:
        self.maximum = max(1, maximum)
        self.limit = 1
        self.in_flight = 0
        self._decrease = decrease
        self._tolerance = tolerance
        self._smoothing = smoothing
        self._rtt: float | None = None
        self._changed = asyncio.Condition()
        self._window_start: float | None = None
        self._window_rtt = 0.0
        self._window_answers = 0
        self._window_backpressure = False
        self._window_saturated = False

    async def acquire(self) -> None:
        """Wait for a free slot (a batch in flight)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def release(self) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def observe(self, rtt: float | None, now: float, *, backpressure: bool = False) -> None:
        """One request ended after `rtt` seconds (None: no answer) at clock time `now`."""
        if self._window_start is None:
            self._window_start = now - (rtt or 0.0)
        self._window_backpressure |= backpressure
        self._window_saturated |= self.in_flight >= self.limit
        if rtt is not None:
            self._window_rtt += rtt
            self._window_answers += 1
        if now - self._window_start < (self._rtt or 0.0):
            return  # the window is not over yet
        mean = self._window_rtt / self._window_answers if self._window_answers else None
        slow = (
            mean is not None and self._rtt is not None and mean > self._rtt * (1 + self._tolerance)
        )
        if self._window_backpressure or slow:
            self.limit = max(1, int(self.limit * self._decrease))
        elif self._window_saturated and mean is not None:
            self.limit = min(self.maximum, self.limit + 1)
        if mean is not None:
            self._rtt = (
                mean
                if self._rtt is None
                else (self._smoothing * mean + (1 - self._smoothing) * self._rtt)
            )
        self._window_start = now
        self._window_rtt, self._window_answers = 0.0, 0
        self._window_backpressure = self._window_saturated = False


class RateLimit:
    """A token bucket: at most `rate` tokens a second (requests, or rows), bursts up to `rate`
    (or up to one request's cost, when a single request costs more than that)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate
        self._at = clock()
        self._lock = asyncio.Lock()

    async def acquire(self, cost: float = 1.0) -> float:
        """Take `cost` tokens; returns the seconds waited for them."""
        async with self._lock:
            now = self._clock()
            capacity = max(self._rate, cost)
            self._tokens = min(capacity, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            wait = (cost - self._tokens) / self._rate
            await self._sleep(wait)
            self._tokens = 0.0
            self._at = self._clock()
            return wait
