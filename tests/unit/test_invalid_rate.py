"""InvalidRateMonitor: the share of invalid events per partition, and when to raise the alarm."""

from __future__ import annotations

from service.source.invalid_rate import InvalidRateMonitor


def test_alarm_is_raised_once_when_the_share_crosses_the_threshold() -> None:
    monitor = InvalidRateMonitor(threshold=0.5, window=100, min_events=10)
    assert monitor.observe("t", 0, 20, 5) is False
    assert monitor.observe("t", 0, 20, 20) is True  # 25 of 40 invalid
    assert monitor.alarmed("t", 0)
    assert monitor.observe("t", 0, 20, 20) is False  # still over: no second report
    assert monitor.ratio("t", 0) == 45 / 60


def test_old_batches_leave_the_window_and_the_alarm_clears() -> None:
    monitor = InvalidRateMonitor(threshold=0.5, window=100, min_events=10)
    monitor.observe("t", 0, 100, 100)
    assert monitor.alarmed("t", 0)
    for _ in range(3):
        monitor.observe("t", 0, 100, 0)
    assert monitor.ratio("t", 0) == 0.0
    assert not monitor.alarmed("t", 0)
    assert monitor.observe("t", 0, 100, 90) is True  # a new incident is reported again


def test_partitions_are_watched_apart_and_small_samples_never_alarm() -> None:
    monitor = InvalidRateMonitor(threshold=0.1, window=1000, min_events=50)
    assert monitor.observe("t", 0, 10, 10) is False  # 10 events: too few to judge
    assert monitor.observe("t", 1, 100, 0) is False
    assert monitor.ratio("t", 1) == 0.0
    assert monitor.ratio("other", 0) == 0.0
