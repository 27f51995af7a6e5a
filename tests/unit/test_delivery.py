"""Delivery on a fake destination and clock: Retry-After, giving up, split retries."""

from __future__ import annotations

from service.core.errors import BatchRejected, DestinationError, RetriableError
from service.core.interfaces import Batch, BatchResult, DestinationWriter
from service.core.metrics import Metrics
from service.core.rows import RowChange
from service.runner.delivery import Delivery
from service.runner.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Scripted(DestinationWriter):
    type_name = "scripted"

    def __init__(self, *answers: BatchResult | DestinationError) -> None:
        self.answers = list(answers)
        self.batches: list[list[str]] = []

    async def write(self, batch: Batch) -> BatchResult:
        self.batches.append([r.key for r in batch.rows])
        answer = self.answers.pop(0) if self.answers else BatchResult()
        if isinstance(answer, DestinationError):
            raise answer
        return answer


def batch(*keys: str) -> Batch:
    return Batch(
        "1", "9", "9-1", [RowChange("added", k, {"id": k}, seq=i) for i, k in enumerate(keys)]
    )


def delivery(writer: DestinationWriter, clock: Clock, attempts: int = 4) -> Delivery:
    policy = RetryPolicy(max_attempts=attempts, base_delay=0.1, max_delay=30)
    return Delivery(writer, policy, clock, Metrics())


async def test_retry_after_is_honoured() -> None:
    clock = Clock()
    writer = Scripted(RetriableError("HTTP 429", retry_after=7.0), BatchResult())
    result = await delivery(writer, clock).send(batch("a"))
    assert result.rejected == {}
    assert clock.slept == [7.0]
    assert len(writer.batches) == 2


async def test_retry_after_longer_than_the_cap_waits_the_cap() -> None:
    clock = Clock()
    writer = Scripted(RetriableError("HTTP 503", retry_after=3600.0), BatchResult())
    await delivery(writer, clock).send(batch("a"))
    assert clock.slept == [30]


async def test_retries_run_out_into_a_fatal_error_that_keeps_the_rows() -> None:
    clock = Clock()
    writer = Scripted(*[RetriableError("HTTP 503")] * 4)
    result = await delivery(writer, clock, attempts=4).send(batch("a", "b"))
    assert result.fatal is not None
    assert "gave up after 4 attempts" in str(result.fatal)
    assert set(result.rejected) == {"a", "b"}
    assert len(clock.slept) == 3


async def test_a_refused_batch_is_split_until_the_bad_row_is_alone() -> None:
    clock = Clock()

    class RefusesC(Scripted):
        async def write(self, b: Batch) -> BatchResult:
            self.batches.append([r.key for r in b.rows])
            if any(r.key == "c" for r in b.rows):
                raise BatchRejected("HTTP 422: c is bad")
            return BatchResult()

    writer = RefusesC()
    result = await delivery(writer, clock).send(batch("a", "b", "c", "d"))
    assert result.rejected == {"c": "HTTP 422: c is bad"}
    assert result.fatal is None
    assert writer.batches == [["a", "b", "c", "d"], ["a", "b"], ["c", "d"], ["c"], ["d"]]
