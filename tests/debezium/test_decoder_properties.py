"""Properties of the Debezium decoder's conversions: exact where the input is valid, and for
any input either a value, a row rejection, or (for a record that is no change) InvalidEvent."""

from __future__ import annotations

import base64
from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.events import InvalidEvent
from service.source.debezium import DebeziumDecoder, decimal_text

EPOCH = datetime(1970, 1, 1)

LOGICAL = [
    ("bytes", "org.apache.kafka.connect.data.Decimal", {"scale": "2"}),
    ("struct", "io.debezium.data.VariableScaleDecimal", None),
    ("int32", "io.debezium.time.Date", None),
    ("int64", "io.debezium.time.Timestamp", None),
    ("int64", "io.debezium.time.MicroTimestamp", None),
    ("int64", "io.debezium.time.NanoTimestamp", None),
    ("int32", "io.debezium.time.Time", None),
    ("int64", "io.debezium.time.MicroTime", None),
    ("int64", "io.debezium.time.NanoTime", None),
    ("string", "io.debezium.data.Json", None),
    ("string", "io.debezium.time.ZonedTimestamp", None),
    ("string", "io.debezium.data.Uuid", None),
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def record(kind: str, name: str, params: dict[str, str] | None, value: Any) -> bytes:
    field: dict[str, Any] = {"type": kind, "name": name, "optional": True, "field": "v"}
    if params:
        field["parameters"] = params
    row_schema = {
        "type": "struct",
        "fields": [{"type": "int32", "optional": False, "field": "id"}, field],
        "optional": True,
        "name": "p.public.t.Value",
    }
    schema = {
        "type": "struct",
        "fields": [
            {**row_schema, "field": "before"},
            {**row_schema, "field": "after"},
            {"type": "struct", "fields": [], "field": "source"},
            {"type": "string", "field": "op"},
        ],
        "name": "p.public.t.Envelope",
    }
    payload = {"before": None, "after": {"id": 1, "v": value}, "source": {}, "op": "c"}
    return orjson.dumps({"schema": schema, "payload": payload})


decoder = DebeziumDecoder()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LOGICAL), json_values)
def test_any_value_of_any_logical_type_is_a_value_or_a_rejection(
    logical: tuple[str, str, dict[str, str] | None], value: Any
) -> None:
    change = decoder.decode(b'{"id":1}', record(*logical, value), "t", 0, 0)
    assert change.op == "upsert"
    assert change.row is not None
    if change.rejected is None:
        orjson.dumps(change.row)  # natural JSON
    else:
        assert "column 'v'" in change.rejected
        assert change.row["v"] == value


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=50)))
def test_any_bytes_are_a_change_or_invalid(value: bytes, key: bytes | None) -> None:
    try:
        change = decoder.decode(key, value, "t", 0, 0)
    except InvalidEvent as exc:
        assert exc.reason in {"empty", "json", "schema"}
    else:
        assert change.op in {"upsert", "delete", "truncate", "snapshot"}


@settings(max_examples=200, deadline=None)
@given(json_values, json_values)
def test_any_json_is_a_change_or_invalid(value: Any, key: Any) -> None:
    try:
        change = decoder.decode(orjson.dumps(key), orjson.dumps(value), "t", 0, 0)
    except InvalidEvent as exc:
        assert exc.reason in {"empty", "json", "schema"}
    else:
        assert change.op in {"upsert", "delete", "truncate", "snapshot"}


@given(st.integers(min_value=-(10**40), max_value=10**40), st.integers(min_value=-6, max_value=40))
def test_decimal_text_is_exact(unscaled: int, scale: int) -> None:
    text = decimal_text(unscaled, scale)
    assert Decimal(text) == Decimal(f"{unscaled}E{-scale}")
    if scale > 0:
        assert len(text.partition(".")[2]) == scale


@given(st.integers(min_value=-(2**200), max_value=2**200), st.integers(min_value=0, max_value=30))
def test_decimal_bytes_round_trip(unscaled: int, scale: int) -> None:
    length = (unscaled.bit_length() + 8) // 8
    encoded = base64.b64encode(unscaled.to_bytes(length, "big", signed=True)).decode()
    change = decoder.decode(
        None,
        record("bytes", "org.apache.kafka.connect.data.Decimal", {"scale": str(scale)}, encoded),
        "t",
        0,
        0,
    )
    assert change.row is not None
    assert Decimal(change.row["v"]) == Decimal(f"{unscaled}E{-scale}")


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_timestamps_are_iso_without_zone(moment: datetime) -> None:
    us = (moment - EPOCH) // timedelta(microseconds=1)
    change = decoder.decode(
        None, record("int64", "io.debezium.time.MicroTimestamp", None, us), "t", 0, 0
    )
    assert change.row is not None
    assert datetime.fromisoformat(change.row["v"]) == moment
    if abs(us) >= 2**63 // 1000 - 1:
        return  # nanoseconds since 1970 fit in int64 for 1677..2262 only
    ns_change = decoder.decode(
        None, record("int64", "io.debezium.time.NanoTimestamp", None, us * 1000 + 7), "t", 0, 0
    )
    assert ns_change.row is not None
    assert ns_change.row["v"].endswith("007")


@given(st.times())
def test_micro_times(moment: time) -> None:
    us = ((moment.hour * 60 + moment.minute) * 60 + moment.second) * 1_000_000 + moment.microsecond
    change = decoder.decode(
        None, record("int64", "io.debezium.time.MicroTime", None, us), "t", 0, 0
    )
    assert change.row is not None
    assert change.row["v"] == moment.strftime("%H:%M:%S.%f")


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(min_value=0, max_value=12))
def test_decimals_as_json_numbers_are_exact_or_rejected(number: float, scale: int) -> None:
    value = record("bytes", "org.apache.kafka.connect.data.Decimal", {"scale": str(scale)}, number)
    change = decoder.decode(None, value, "t", 0, 0)
    assert change.row is not None
    if change.rejected is None:
        text = change.row["v"]
        assert Decimal(text) == Decimal(repr(number))
        assert len(text.partition(".")[2]) == scale
    else:
        assert "decimal places" in change.rejected
