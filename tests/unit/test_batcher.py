"""Batcher: batches by size and by age on an injected clock, in order, losing nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.runner.batcher import Batcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_an_empty_batcher_is_not_ready_and_drains_nothing(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(3, 1.0, clock)
    clock.now += 60
    assert not batcher.is_ready()
    assert batcher.drain() == []
    assert batcher.drain(force=True) == []


def test_a_partial_young_batch_is_not_ready(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(3, 1.0, clock)
    batcher.add([1, 2])
    clock.now += 0.5
    assert not batcher.is_ready()
    assert batcher.drain() == []
    assert len(batcher) == 2


def test_a_full_batch_is_ready_at_once(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(3, 1.0, clock)
    batcher.add([1, 2, 3])
    assert batcher.is_ready()
    assert batcher.drain() == [1, 2, 3]
    assert len(batcher) == 0


def test_a_drain_never_exceeds_max_rows_and_keeps_the_rest(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(3, 1.0, clock)
    batcher.add(range(7))
    assert batcher.drain() == [0, 1, 2]
    assert batcher.drain() == [3, 4, 5]
    assert batcher.drain() == []  # one row left, young
    assert len(batcher) == 1


def test_a_partial_batch_becomes_ready_when_its_first_row_reaches_max_age(
    clock: FakeClock,
) -> None:
    batcher: Batcher[int] = Batcher(10, 2.0, clock)
    batcher.add([1])
    clock.now += 1.0
    batcher.add([2])  # a later row does not restart the age
    clock.now += 0.999
    assert not batcher.is_ready()
    clock.now += 0.001
    assert batcher.is_ready()
    assert batcher.drain() == [1, 2]


def test_age_counts_from_the_first_row_after_the_batcher_was_emptied(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(10, 2.0, clock)
    batcher.add([1])
    clock.now += 5
    assert batcher.drain() == [1]
    batcher.add([2])
    assert not batcher.is_ready()
    clock.now += 2
    assert batcher.drain() == [2]


def test_force_drains_what_waits_without_waiting(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(10, 60.0, clock)
    batcher.add([1, 2])
    assert batcher.drain(force=True) == [1, 2]
    assert len(batcher) == 0


def test_force_still_respects_max_rows(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(2, 60.0, clock)
    batcher.add([1, 2, 3])
    assert batcher.drain(force=True) == [1, 2]
    assert batcher.drain(force=True) == [3]
    assert batcher.drain(force=True) == []


def test_max_rows_below_one_is_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="max_rows"):
        Batcher(0, 1.0, clock)


def test_rows_left_after_a_drain_keep_their_age(clock: FakeClock) -> None:
    batcher: Batcher[int] = Batcher(2, 1.0, clock)
    batcher.add([1, 2, 3])  # all three arrive at t=0
    clock.now += 0.9
    assert batcher.drain() == [1, 2]
    clock.now += 0.1  # row 3 has now waited max_age
    assert batcher.is_ready()


# --- property ------------------------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 7)),
    st.tuples(st.just("tick"), st.floats(0, 3)),
    st.tuples(st.just("drain"), st.booleans()),
)


@given(st.integers(1, 5), st.floats(0, 2), st.lists(OPS, max_size=40))
def test_batches_are_bounded_ordered_and_lose_no_row(
    max_rows: int, max_age: float, script: list[tuple[str, object]]
) -> None:
    clock = FakeClock()
    batcher: Batcher[int] = Batcher(max_rows, max_age, clock)
    added: list[int] = []
    drained: list[int] = []
    for op, arg in script:
        if op == "add":
            rows = list(range(len(added), len(added) + int(arg)))  # type: ignore[call-overload]
            added += rows
            batcher.add(rows)
        elif op == "tick":
            clock.now += float(arg)  # type: ignore[arg-type]
        else:
            batch = batcher.drain(force=bool(arg))
            assert len(batch) <= max_rows
            drained += batch
        assert len(batcher) == len(added) - len(drained)
    while batch := batcher.drain(force=True):
        assert len(batch) <= max_rows
        drained += batch
    assert drained == added
