"""decode_event: a Kafka record -> ChangeEvent, or InvalidEvent with a reason for the DLQ."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.events import InvalidEvent
from service.source.decode import decode_event


def encode(**fields: object) -> bytes:
    return orjson.dumps(fields)


def reason_of(key: bytes | None, value: bytes | None) -> str:
    with pytest.raises(InvalidEvent) as info:
        decode_event(key, value)
    return info.value.reason


def test_an_upsert_decodes_with_its_rows() -> None:
    event = decode_event(b"7", encode(modelId="7", op="upsert", rows=[{"id": 1, "a": "x"}]))
    assert (event.model_id, event.op) == ("7", "upsert")
    assert event.rows == [{"id": 1, "a": "x"}]


def test_a_delete_decodes() -> None:
    event = decode_event(b"7", encode(modelId="7", op="delete", rows=[{"id": 1}]))
    assert event.op == "delete"
    assert event.rows == [{"id": 1}]


def test_a_snapshot_decodes_with_its_id_and_last_flag() -> None:
    value = encode(modelId="7", op="snapshot", rows=[], snapshotId="s1", last=True)
    event = decode_event(b"7", value)
    assert (event.op, event.snapshot_id, event.last) == ("snapshot", "s1", True)


def test_optional_event_id_and_emitted_at_are_read() -> None:
    value = encode(
        modelId="7", op="upsert", rows=[], eventId="e1", emittedAt="2024-05-01T12:00:00Z"
    )
    event = decode_event(b"7", value)
    assert event.event_id == "e1"
    assert event.emitted_at == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()


def test_a_record_without_a_key_is_accepted() -> None:
    event = decode_event(None, encode(modelId="7", op="upsert", rows=[]))
    assert event.model_id == "7"


def test_invalid_json_is_reason_json() -> None:
    assert reason_of(b"7", b'{"modelId": "7", ') == "json"


def test_a_missing_model_id_is_reason_schema() -> None:
    assert reason_of(None, encode(op="upsert", rows=[])) == "schema"


def test_an_unknown_op_is_reason_schema() -> None:
    assert reason_of(b"7", encode(modelId="7", op="merge", rows=[])) == "schema"


def test_rows_that_are_not_a_list_are_reason_schema() -> None:
    assert reason_of(b"7", encode(modelId="7", op="upsert", rows={"id": 1})) == "schema"


def test_a_snapshot_without_snapshot_id_is_reason_schema() -> None:
    assert reason_of(b"7", encode(modelId="7", op="snapshot", rows=[])) == "schema"


def test_json_that_is_not_an_object_is_reason_schema() -> None:
    assert reason_of(b"7", b"[1, 2]") == "schema"


def test_the_schema_message_names_the_field() -> None:
    with pytest.raises(InvalidEvent, match="op"):
        decode_event(b"7", encode(modelId="7", op="merge", rows=[]))


@pytest.mark.parametrize("value", [None, b""])
def test_an_empty_value_is_reason_empty(value: bytes | None) -> None:
    assert reason_of(b"7", value) == "empty"


def test_the_record_key_may_be_the_rows_key_rather_than_the_model_id() -> None:
    event = decode_event(b"42", encode(modelId="7", op="upsert", rows=[{"id": 42}]))
    assert event.model_id == "7"
    assert event.rows == [{"id": 42}]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(codec=None)),  # invalid surrogates too
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(_json, st.one_of(st.none(), st.binary(max_size=8)))
def test_any_json_value_decodes_or_is_invalid_never_an_error(
    value: object, key: bytes | None
) -> None:
    raw = json.dumps(value).encode()
    try:
        decode_event(key, raw)
    except InvalidEvent as exc:
        assert exc.reason in {"empty", "json", "schema"}


@given(st.lists(st.dictionaries(st.text(), _json, max_size=4), max_size=4))
def test_any_rows_decode_or_are_invalid_never_an_error(rows: list[dict[str, object]]) -> None:
    raw = json.dumps({"modelId": "1", "op": "upsert", "rows": rows}).encode()
    try:
        event = decode_event(b"1", raw)
    except InvalidEvent as exc:
        assert exc.reason == "json"  # only a lone surrogate makes it invalid
        return
    assert len(event.rows) == len(rows)


@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_rows_are_invalid_not_a_crash(depth: int) -> None:
    raw = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 1, "v": ' + b"[" * depth
    raw += b"]" * depth + b"}]}"
    try:
        decode_event(None, raw)
    except InvalidEvent as exc:
        assert exc.reason == "json"


def test_a_one_megabyte_string_decodes() -> None:
    big = "x" * (1 << 20)
    event = decode_event(
        None, json.dumps({"modelId": "1", "op": "upsert", "rows": [{"v": big}]}).encode()
    )
    assert event.rows[0]["v"] == big
