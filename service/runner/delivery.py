"""Delivery: sends one batch to one destination, with everything a destination leaves to the
framework: retries with backoff, split retries to isolate refused rows, a rate limit and
adaptive concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from service.core.errors import (
    BatchRejected,
    DestinationError,
    DestinationUnavailable,
    RetriableError,
)
from service.core.interfaces import Batch, BatchResult, Clock, DestinationWriter
from service.core.metrics import Metrics
from service.runner.pacing import AdaptiveConcurrency, RateLimit
from service.runner.retry import RetryPolicy


@dataclass(slots=True)
class DeliveryResult:
    """Rows not delivered, by key, with the reason; `fatal` ends the run."""

    rejected: dict[str, str]
    fatal: DestinationError | None = None


class Delivery:
    def __init__(
        self, writer: DestinationWriter, retry: RetryPolicy, clock: Clock, metrics: Metrics
    ) -> None:
        self.writer = writer
        self._retry = retry
        self._clock = clock
        self._metrics = metrics
        self._kind = writer.type_name
        self.limiter = AdaptiveConcurrency(writer.max_concurrency)
        requests, rows = writer.max_requests_per_second, writer.max_rows_per_second
        self._requests = RateLimit(requests, clock.monotonic, clock.sleep) if requests else None
        self._rows = RateLimit(rows, clock.monotonic, clock.sleep) if rows else None

    async def send(self, batch: Batch) -> DeliveryResult:
        """Deliver with retries. A batch refused as a whole (a 4xx) is split in halves and the
        halves sent again, down to single rows, so one bad row does not hold back the rest."""
        try:
            result = await self._with_retries(batch)
        except DestinationError as exc:
            keys = [r.key for r in batch.rows]
            if exc.fatal or not isinstance(exc, BatchRejected) or len(batch.rows) == 1:
                return DeliveryResult(dict.fromkeys(keys, str(exc)), exc if exc.fatal else None)
            half = len(batch.rows) // 2
            first = await self.send(_part(batch, batch.rows[:half], 1))
            if first.fatal is not None:
                rest = dict.fromkeys((r.key for r in batch.rows[half:]), str(first.fatal))
                return DeliveryResult({**first.rejected, **rest}, first.fatal)
            second = await self.send(_part(batch, batch.rows[half:], 2))
            return DeliveryResult({**first.rejected, **second.rejected}, second.fatal)
        return DeliveryResult(result.rejected)

    async def _with_retries(self, batch: Batch) -> BatchResult:
        attempt = 1
        while True:
            try:
                return await self._request(batch)
            except RetriableError as exc:
                if attempt >= self._retry.max_attempts:
                    raise DestinationUnavailable(
                        f"{exc} (gave up after {attempt} attempts)"
                    ) from exc
                self._metrics.destination_retries.labels(self._kind).inc()
                await self._clock.sleep(self._retry.delay(attempt, exc.retry_after))
                attempt += 1

    async def _request(self, batch: Batch) -> BatchResult:
        """One call of the destination, paced by the rate limit; its time steers the limiter."""
        waited = 0.0
        if self._requests is not None:
            waited += await self._requests.acquire()
        if self._rows is not None:
            waited += await self._rows.acquire(len(batch.rows))
        if waited:
            self._metrics.rate_limit_waits.labels(self._kind).inc()
        self._metrics.requests_in_flight.labels(self._kind).inc()
        started = self._clock.monotonic()
        rtt: float | None = None
        backpressure = False
        try:
            result = await self.writer.write(batch)
            rtt = self._clock.monotonic() - started
            return result
        except RetriableError:
            rtt = self._clock.monotonic() - started
            backpressure = True
            raise
        except DestinationError:
            rtt = self._clock.monotonic() - started
            raise
        finally:
            self._metrics.requests_in_flight.labels(self._kind).dec()
            if rtt is not None:
                self._metrics.destination_request_seconds.labels(self._kind).observe(rtt)
            self.limiter.observe(rtt, self._clock.monotonic(), backpressure=backpressure)
            self._metrics.concurrency_limit.labels(self._kind).set(self.limiter.limit)


def _part(batch: Batch, rows: list, n: int) -> Batch:
    return Batch(batch.sync_id, batch.run_id, f"{batch.batch_id}.{n}", rows)
