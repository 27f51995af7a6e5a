"""RetryPolicy.delay: capped exponential backoff with jitter, honouring retry_after."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from service.runner.retry import RetryPolicy


def policy(seed: int = 7, base: float = 0.2, cap: float = 30.0) -> RetryPolicy:
    return RetryPolicy(base_delay=base, max_delay=cap, rng=random.Random(seed))


def test_first_delay_lies_between_half_the_base_and_the_base() -> None:
    delays = [policy(seed).delay(1) for seed in range(50)]
    assert all(0.1 <= d <= 0.2 for d in delays)
    assert len(set(delays)) > 1  # jittered, not constant


def test_the_ceiling_doubles_with_each_attempt() -> None:
    for attempt, ceiling in [(2, 0.4), (3, 0.8), (4, 1.6)]:
        delays = [policy(seed).delay(attempt) for seed in range(20)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt


def test_the_delay_is_capped_by_max_delay() -> None:
    delays = [policy(seed, base=1.0, cap=5.0).delay(20) for seed in range(50)]
    assert all(2.5 <= d <= 5.0 for d in delays)


def test_retry_after_wins_when_it_asks_for_longer() -> None:
    assert policy().delay(1, retry_after=7.0) == 7.0


def test_retry_after_shorter_than_the_backoff_is_ignored() -> None:
    plain = policy(seed=3).delay(5)  # in [1.6, 3.2]
    assert policy(seed=3).delay(5, retry_after=0.5) == plain


def test_retry_after_is_capped_by_max_delay() -> None:
    assert policy(cap=30.0).delay(1, retry_after=3600.0) == 30.0


def test_the_same_seed_gives_the_same_delays() -> None:
    a, b = policy(seed=42), policy(seed=42)
    assert [a.delay(n) for n in range(1, 8)] == [b.delay(n) for n in range(1, 8)]


@given(
    st.integers(1, 60),
    st.floats(0.001, 10),
    st.floats(0.001, 600),
    st.integers(0, 2**32),
)
def test_delay_stays_within_half_ceiling_and_ceiling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = policy(seed, base=base, cap=cap).delay(attempt)
    assert ceiling / 2 <= delay <= ceiling


@given(st.integers(1, 60), st.floats(0, 10_000), st.integers(0, 2**32))
def test_delay_with_retry_after_is_at_least_it_yet_never_above_max(
    attempt: int, retry_after: float, seed: int
) -> None:
    delay = policy(seed).delay(attempt, retry_after=retry_after)
    assert delay <= 30.0
    assert delay >= min(30.0, retry_after)
