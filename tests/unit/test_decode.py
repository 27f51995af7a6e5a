"""decode_event: a Kafka record -> ChangeEvent, or InvalidEvent with a reason for the DLQ."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

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
    assert event.emitted_at == datetime(2024, 5, 1, 12, tzinfo=UTC)


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


def test_a_key_other_than_the_model_id_is_reason_key_mismatch() -> None:
    assert reason_of(b"8", encode(modelId="7", op="upsert", rows=[])) == "key_mismatch"
