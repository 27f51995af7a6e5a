"""classify_response and retry_after_seconds: what a webhook's HTTP answer means."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from service.core.errors import (
    BatchRejected,
    DestinationAuthError,
    DestinationError,
    RetriableError,
)
from service.destinations.webhook import classify_response, retry_after_seconds


def test_2xx_with_an_empty_body_accepts_every_row() -> None:
    assert classify_response(200, {}, b"").rejected == {}


@pytest.mark.parametrize("status", [201, 202, 204])
def test_any_2xx_accepts(status: int) -> None:
    assert classify_response(status, {}, b"").rejected == {}


def test_2xx_with_a_non_rejecting_body_accepts_every_row() -> None:
    assert classify_response(200, {}, b'{"ok": true}').rejected == {}
    assert classify_response(200, {}, b"not json").rejected == {}


def test_2xx_rejected_body_rejects_the_named_rows_with_their_errors() -> None:
    body = orjson.dumps(
        {"rejected": [{"key": "1", "error": "bad email"}, {"key": 2, "error": "too long"}]}
    )
    assert classify_response(200, {}, body).rejected == {"1": "bad email", "2": "too long"}


def test_a_rejected_row_without_an_error_still_gets_a_reason() -> None:
    result = classify_response(200, {}, b'{"rejected": [{"key": "1"}]}')
    assert list(result.rejected) == ["1"]
    assert result.rejected["1"]


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retriable(status: int) -> None:
    with pytest.raises(RetriableError) as info:
        classify_response(status, {}, b"busy")
    assert info.value.retriable
    assert not info.value.fatal
    assert info.value.retry_after is None
    assert f"HTTP {status}" in str(info.value)


def test_retry_after_in_seconds_is_passed_on() -> None:
    with pytest.raises(RetriableError) as info:
        classify_response(429, {"Retry-After": "12"}, b"")
    assert info.value.retry_after == 12.0


def test_retry_after_as_an_http_date_is_passed_on_as_seconds() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    with pytest.raises(RetriableError) as info:
        classify_response(503, {"Retry-After": when}, b"")
    assert info.value.retry_after is not None
    assert 100 < info.value.retry_after <= 120


@pytest.mark.parametrize("status", [501, 400, 404, 422])
def test_other_failures_reject_the_batch_without_retry(status: int) -> None:
    with pytest.raises(BatchRejected) as info:
        classify_response(status, {}, b"nope")
    assert not isinstance(info.value, (RetriableError, DestinationAuthError))
    assert not info.value.retriable
    assert not info.value.fatal


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_fatal_and_not_retriable(status: int) -> None:
    with pytest.raises(DestinationAuthError) as info:
        classify_response(status, {}, b"")
    assert info.value.fatal
    assert not info.value.retriable


def test_the_error_message_carries_a_snippet_of_the_body() -> None:
    with pytest.raises(DestinationError, match="HTTP 400: field email is required"):
        classify_response(400, {}, b"field email is required")


def test_retry_after_seconds_reads_delta_seconds() -> None:
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds(" 5 ") == 5.0


def test_retry_after_seconds_reads_an_http_date_against_now() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0


def test_retry_after_seconds_of_a_past_date_is_zero() -> None:
    now = datetime(2015, 10, 21, 8, 0, tzinfo=UTC)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5"])
def test_retry_after_seconds_is_none_when_absent_or_unreadable(value: str | None) -> None:
    assert retry_after_seconds(value) is None
