"""next_run_at and RetryBackoff: when a scheduled sync runs, and how retries back off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from service.core.models import SyncSchedule
from service.scheduler import RetryBackoff, next_run_at

SCHEDULE = TypeAdapter(SyncSchedule)
NOW = datetime(2024, 5, 6, 10, 2, 30, tzinfo=UTC)  # a Monday


def schedule(body: dict[str, Any]) -> Any:
    return SCHEDULE.validate_python(body)


def every(quantity: int, unit: str) -> Any:
    return schedule(
        {"type": "interval", "schedule": {"interval": {"quantity": quantity, "unit": unit}}}
    )


def test_an_interval_sync_never_run_is_due_now() -> None:
    assert next_run_at(every(5, "minute"), NOW, None) == NOW


def test_an_interval_sync_runs_one_interval_after_its_last_run() -> None:
    last = NOW - timedelta(minutes=1)
    assert next_run_at(every(5, "minute"), NOW, last) == last + timedelta(minutes=5)


def test_an_overdue_interval_sync_is_due_now() -> None:
    last = NOW - timedelta(days=3)
    assert next_run_at(every(1, "day"), NOW, last) == NOW


def test_a_cron_sync_runs_at_the_next_matching_minute() -> None:
    cron = schedule({"type": "cron", "schedule": {"expression": "*/5 * * * *"}})
    assert next_run_at(cron, NOW, None) == datetime(2024, 5, 6, 10, 5, tzinfo=UTC)


def test_a_visual_sync_runs_at_the_next_selected_day_and_time() -> None:
    visual = schedule(
        {
            "type": "visual",
            "schedule": {"expressions": [{"days": {"wednesday": True}, "time": "09:30"}]},
        }
    )
    assert next_run_at(visual, NOW, None) == datetime(2024, 5, 8, 9, 30, tzinfo=UTC)


def test_a_visual_time_already_passed_today_moves_to_next_week() -> None:
    visual = schedule(
        {
            "type": "visual",
            "schedule": {"expressions": [{"days": {"monday": True}, "time": "10:00"}]},
        }
    )
    assert next_run_at(visual, NOW, None) == datetime(2024, 5, 13, 10, 0, tzinfo=UTC)


def test_manual_continuous_and_dbt_schedules_never_run_on_their_own() -> None:
    for body in (
        {"type": "manual"},
        {"type": "continuous"},
        {"type": "dbt-cloud", "schedule": {"account": {"id": "1"}, "job": {"id": "2"}}},
    ):
        assert next_run_at(schedule(body), NOW, None) is None


def test_retry_backoff_doubles_from_the_base() -> None:
    backoff = RetryBackoff(base=10, cap=600)
    assert [backoff.next_delay() for _ in range(4)] == [10, 20, 40, 80]


def test_retry_backoff_is_capped() -> None:
    backoff = RetryBackoff(base=10, cap=600)
    delays = [backoff.next_delay() for _ in range(10)]
    assert delays[-4:] == [600, 600, 600, 600]
    assert max(delays) == 600


def test_retry_backoff_reset_starts_over_from_the_base() -> None:
    backoff = RetryBackoff(base=10, cap=600)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == 10
