"""The Debezium decoder over records a real Debezium PostgreSQL connector wrote
(tests/fixtures/debezium/, see record_fixtures.py), and over made-up ones."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.core.events import InvalidEvent
from service.source import debezium
from service.source.debezium import DebeziumChange, DebeziumDecoder, decimal_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium"

Record = tuple[str, int, int, bytes | None, bytes | None]


def records(variant: str, table: str | None = None) -> list[Record]:
    out = []
    for line in (FIXTURES / f"{variant}.jsonl").read_bytes().splitlines():
        r = orjson.loads(line)
        if table and r["topic"] != f"public.{table}":
            continue
        key = None if r["key"] is None else r["key"].encode()
        value = None if r["value"] is None else r["value"].encode()
        out.append((r["topic"], r["partition"], r["offset"], key, value))
    return out


def decode_all(variant: str, table: str | None = None) -> list[DebeziumChange]:
    decoder = DebeziumDecoder()
    return [decoder.decode(k, v, t, p, o) for t, p, o, k, v in records(variant, table)]


def ops(changes: list[DebeziumChange]) -> list[tuple[str, str | None, Any]]:
    return [(c.op, c.snapshot, c.key) for c in changes]


# The rows of fx_types as the database holds them, in the form the decoder gives.
ALPHA = {
    "id": 1,
    "name": "alpha",
    "price": "12.50",
    "amount": "3.14159",
    "born": "2026-01-01",
    "seen_at": "2026-01-01T12:00:00.123456",
    "seen_at_ms": "2026-01-01T12:00:00.123000",
    "changed_at": "2026-01-01T10:00:00.500000Z",
    "opens": "08:30:00.000001",
    "opens_ms": "08:30:00.250000",
    "doc": {"a": 1, "b": [1, 2]},
    "docb": {"tier": "gold", "n": 1.5},
    "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "note": None,
}
BETA = {
    "id": 2,
    "name": "beta",
    "price": "-0.05",
    "amount": "-12345678901234567890.123456789",
    "born": "1969-12-31",
    "seen_at": "1969-12-31T23:59:59.999999",
    "seen_at_ms": "1900-01-01T00:00:00",
    "changed_at": "1999-12-31T23:59:59.000000Z",
    "opens": "23:59:59.999999",
    "opens_ms": "00:00:00.000000",
    "doc": [],
    "docb": None,
    "ref": "00000000-0000-0000-0000-000000000000",
    "note": None,
}
DELTA = {
    "id": 4,
    "name": "delta",
    "price": "99999999.99",
    "amount": "0",
    "born": "2000-02-29",
    "seen_at": "2000-02-29T00:00:00",
    "seen_at_ms": None,
    "changed_at": None,
    "opens": None,
    "opens_ms": None,
    "doc": None,
    "docb": {"x": [True, None]},
    "ref": None,
    "note": None,
}

TYPES_OPS = [
    ("snapshot", "first", {"id": 1}),
    ("snapshot", "true", {"id": 2}),
    ("snapshot", "last_in_data_collection", {"id": 3}),
    ("upsert", None, {"id": 4}),
    ("upsert", None, {"id": 1}),
    ("upsert", None, {"id": 3}),
    ("delete", None, {"id": 2}),  # the key change: delete of the old key, tombstone, create
    ("delete", None, {"id": 2}),
    ("upsert", None, {"id": 5}),
    ("delete", None, {"id": 4}),
    ("delete", None, {"id": 4}),
]
PAIRS_OPS = [
    ("snapshot", "first_in_data_collection", {"tenant": "acme", "id": 1}),
    ("snapshot", "true", {"tenant": "acme", "id": 2}),
    ("snapshot", "last", {"tenant": "initech", "id": 1}),
    ("truncate", None, None),
    ("upsert", None, {"tenant": "acme", "id": 3}),
]


@pytest.mark.parametrize(
    "variant", ["envelope_schema", "envelope_plain", "envelope_connect_numeric"]
)
def test_envelope_ops_snapshot_markers_and_keys(variant: str) -> None:
    assert ops(decode_all(variant, "fx_types")) == TYPES_OPS
    assert ops(decode_all(variant, "fx_pairs")) == PAIRS_OPS


def test_envelope_with_schemas_converts_every_type() -> None:
    changes = decode_all("envelope_schema", "fx_types")
    assert [c.rejected for c in changes] == [None] * len(changes)
    assert changes[0].row == ALPHA
    assert changes[1].row == BETA
    assert changes[3].row == DELTA
    assert changes[4].row == {**ALPHA, "price": "13.00", "amount": "0.0000000001"}
    assert changes[8].row == {**BETA, "id": 5}
    # Schema-less types pass through: ZonedTimestamp, Uuid, text.
    assert changes[0].row["changed_at"] == "2026-01-01T10:00:00.500000Z"


def test_envelope_without_schemas_passes_values_as_they_are() -> None:
    raw = records("envelope_plain", "fx_types")
    changes = decode_all("envelope_plain", "fx_types")
    for (_, _, _, _, value), change in zip(raw, changes, strict=True):
        if change.op in ("upsert", "snapshot") and not change.unavailable:
            assert change.row == orjson.loads(value)["after"]
    assert changes[0].row["price"] == "BOI="  # the Decimal's bytes: nothing says what they are
    assert changes[0].row["amount"] == {"scale": 5, "value": "BMsv"}


def test_connect_time_types_and_decimals_as_json_numbers() -> None:
    changes = decode_all("envelope_connect_numeric", "fx_types")
    assert [c.rejected for c in changes] == [None] * len(changes)
    # time.precision.mode=connect carries milliseconds only.
    assert changes[0].row == {
        **ALPHA,
        "seen_at": "2026-01-01T12:00:00.123000",
        "opens": "08:30:00.000000",
    }
    assert changes[1].row["price"] == "-0.05"
    assert changes[3].row["price"] == "99999999.99"


def test_delete_row_is_the_record_key_not_before() -> None:
    # REPLICA IDENTITY DEFAULT: `before` has the key, and "" for the NOT NULL name.
    change = decode_all("envelope_schema", "fx_types")[6]
    assert change.op == "delete"
    assert not change.tombstone
    assert change.row == {"id": 2}


def test_tombstones_delete_by_record_key() -> None:
    changes = decode_all("envelope_schema", "fx_types")
    tombstones = [c for c in changes if c.tombstone]
    assert [(c.op, c.row, c.emitted_ms) for c in tombstones] == [
        ("delete", {"id": 2}, None),
        ("delete", {"id": 4}, None),
    ]


def test_delete_without_key_takes_before() -> None:
    _, _, _, _, value = records("envelope_schema", "fx_types")[6]
    change = DebeziumDecoder().decode(None, value, "t", 0, 6)
    assert change.op == "delete"
    assert change.row is not None
    assert change.row["id"] == 2
    assert change.key is None


def test_truncate() -> None:
    change = decode_all("envelope_schema", "fx_pairs")[3]
    assert (change.op, change.row, change.table) == ("truncate", None, "public.fx_pairs")
    assert change.emitted_ms is not None


def test_emitted_at_is_source_ts_ms_and_position_is_kept() -> None:
    raw = records("envelope_schema", "fx_types")
    for (topic, partition, offset, _, value), change in zip(
        raw, decode_all("envelope_schema", "fx_types"), strict=True
    ):
        assert (change.topic, change.partition, change.offset) == (topic, partition, offset)
        if value is None:
            assert change.emitted_at is None
            continue
        ts_ms = orjson.loads(value)["payload"]["source"]["ts_ms"]
        assert change.emitted_ms == ts_ms
        assert change.emitted_at == ts_ms / 1000


def test_snapshot_closing_and_identity() -> None:
    changes = decode_all("envelope_schema")
    closing = [(c.table, c.snapshot) for c in changes if c.closes_snapshot]
    assert sorted(closing) == [
        ("public.fx_pairs", "last"),
        ("public.fx_types", "last_in_data_collection"),
    ]
    snapshot_ids = {c.snapshot_id for c in changes if c.op == "snapshot"}
    assert len(snapshot_ids) == 1
    assert all(c.snapshot_id is None for c in changes if c.op != "snapshot")


def test_unchanged_toasted_column_is_left_out_and_named() -> None:
    for variant in ("envelope_schema", "envelope_plain", "flat_schema", "flat_plain"):
        change = next(c for c in decode_all(variant, "fx_types") if c.unavailable)
        assert change.key == {"id": 3}
        assert change.unavailable == ("note",)
        assert change.row is not None
        assert "note" not in change.row
        assert change.row["name"] == "gamma2"


def test_flattened_with_schemas() -> None:
    changes = decode_all("flat_schema", "fx_types")
    assert ops(changes) == TYPES_OPS
    assert changes[0].row == ALPHA  # no __ fields, values converted
    assert changes[0].emitted_ms is not None
    assert changes[0].lsn is not None
    assert changes[7].tombstone
    assert [c.op for c in decode_all("flat_schema", "fx_pairs")] == [
        "snapshot",
        "snapshot",
        "snapshot",
        "upsert",  # ExtractNewRecordState drops truncates
    ]


def test_flattened_without_schemas_or_source_fields() -> None:
    changes = decode_all("flat_plain", "fx_types")
    # Only __op and __deleted: a read is an upsert, a delete is rewritten, no tombstones.
    assert [(c.op, c.key) for c in changes] == [
        ("upsert", {"id": 1}),
        ("upsert", {"id": 2}),
        ("upsert", {"id": 3}),
        ("upsert", {"id": 4}),
        ("upsert", {"id": 1}),
        ("upsert", {"id": 3}),
        ("delete", {"id": 2}),
        ("upsert", {"id": 5}),
        ("delete", {"id": 4}),
    ]
    assert all(not k.startswith("__") for c in changes for k in c.row or {})
    assert changes[0].emitted_ms is None


def test_flattened_delete_without_key_uses_the_row() -> None:
    value = orjson.dumps({"id": 7, "name": "x", "__deleted": "true", "__op": "d"})
    change = DebeziumDecoder().decode(None, value, "t", 0, 0)
    assert (change.op, change.row) == ("delete", {"id": 7, "name": "x"})


def test_schema_shapes_are_built_once_per_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = debezium._value_shape

    def counting(schema: Any) -> Any:
        built.append(schema)
        return real(schema)

    monkeypatch.setattr(debezium, "_value_shape", counting)
    changes = decode_all("envelope_schema")
    assert len(changes) == 16
    assert len(built) == 2  # one envelope schema per table


def test_other_json_layouts_of_the_wrapper_decode_alike() -> None:
    decoder = DebeziumDecoder()
    for topic, partition, offset, key, value in records("envelope_schema", "fx_types")[:3]:
        assert value is not None
        parsed = orjson.loads(value)
        reordered = orjson.dumps({"payload": parsed["payload"], "schema": parsed["schema"]})
        spaced = value.replace(b',"payload":', b', "payload": ') + b"\n"
        expected = decoder.decode(key, value, topic, partition, offset)
        assert decoder.decode(key, reordered, topic, partition, offset) == expected
        assert decoder.decode(key, spaced, topic, partition, offset) == expected


# --- rejections and invalid records ----------------------------------------------------------


def alpha_record(**after: Any) -> bytes:
    _, _, _, _, value = records("envelope_schema", "fx_types")[0]
    assert value is not None
    parsed = orjson.loads(value)
    parsed["payload"]["after"].update(after)
    return orjson.dumps(parsed)


@pytest.mark.parametrize(
    ("after", "column", "words"),
    [
        ({"price": "not base64!"}, "price", "not base64"),
        ({"price": [1]}, "price", "base64 bytes or a number"),
        ({"amount": {"scale": "x", "value": "AA=="}}, "amount", "scale must be an integer"),
        ({"born": 10**12}, "born", "out of range"),
        ({"born": "2026-01-01"}, "born", "must be an integer"),
        ({"seen_at": 2**62}, "seen_at", "out of range"),
        ({"seen_at": True}, "seen_at", "must be an integer"),
        ({"opens": -1}, "opens", "not within a day"),
        ({"doc": "{not json"}, "doc", "not valid JSON"),
        ({"docb": 5}, "docb", "must be a string"),
    ],
)
def test_unconvertible_value_rejects_the_row(
    after: dict[str, Any], column: str, words: str
) -> None:
    change = DebeziumDecoder().decode(b'{"id":1}', alpha_record(**after), "t", 0, 0)
    assert change.op == "snapshot"
    assert change.rejected is not None
    assert f"column {column!r}" in change.rejected
    assert words in change.rejected
    assert change.row is not None
    assert change.row[column] == after[column]  # as it arrived


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, "empty"),
        (None, b"", "empty"),
        (b'{"id":1}', b"{nope", "json"),
        (b'{"id":1}', b"[1,2]", "schema"),
        (b'{"id":1}', b'{"before":null,"after":null,"source":{},"op":"c"}', "schema"),
        (b'{"id":1}', b'{"before":null,"after":{},"source":{},"op":"x"}', "schema"),
        (None, b'{"before":null,"after":null,"source":{},"op":"d"}', "schema"),
        (b'{"id":1}', b'{"id":1,"__op":"t"}', "schema"),
        (b'"just a string"', None, "empty"),
    ],
)
def test_records_that_are_no_change_are_invalid(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        DebeziumDecoder().decode(key, value, "t", 0, 0)
    assert caught.value.reason == reason


def test_key_with_schema_is_converted() -> None:
    key = orjson.dumps(
        {
            "schema": {
                "type": "struct",
                "fields": [
                    {
                        "type": "bytes",
                        "name": "org.apache.kafka.connect.data.Decimal",
                        "parameters": {"scale": "3"},
                        "field": "code",
                    },
                    {"type": "int32", "name": "io.debezium.time.Date", "field": "day"},
                ],
            },
            "payload": {
                "code": base64.b64encode((-1500).to_bytes(2, "big", signed=True)).decode(),
                "day": 0,
            },
        }
    )
    change = DebeziumDecoder().decode(key, None, "t", 0, 0)
    assert change.row == {"code": "-1.500", "day": "1970-01-01"}


def test_bad_key_value_rejects_the_row() -> None:
    key = orjson.dumps(
        {
            "schema": {
                "type": "struct",
                "fields": [{"type": "int32", "name": "io.debezium.time.Date", "field": "day"}],
            },
            "payload": {"day": "yesterday"},
        }
    )
    change = DebeziumDecoder().decode(key, None, "t", 0, 0)
    assert change.op == "delete"
    assert change.rejected is not None
    assert "'day'" in change.rejected


def test_arrays_and_structs_of_logical_types() -> None:
    schema = {
        "type": "struct",
        "fields": [
            {"type": "int32", "field": "id"},
            {
                "type": "array",
                "items": {"type": "int32", "name": "io.debezium.time.Date"},
                "field": "days",
            },
            {
                "type": "struct",
                "fields": [{"type": "int64", "name": "io.debezium.time.MicroTime", "field": "t"}],
                "field": "nested",
            },
            {"type": "int64", "name": "io.debezium.time.NanoTimestamp", "field": "nanos"},
            {"type": "int64", "name": "io.debezium.time.NanoTime", "field": "nano_time"},
        ],
        "name": "x.Value",
    }
    payload = {
        "id": 1,
        "days": [0, None, 1],
        "nested": {"t": 1},
        "nanos": 1_500_000_000_123,
        "nano_time": 1_000_000_001,
        "__op": "c",
    }
    value = orjson.dumps({"schema": schema, "payload": payload})
    change = DebeziumDecoder().decode(None, value, "t", 0, 0)
    assert change.rejected is None
    assert change.row == {
        "id": 1,
        "days": ["1970-01-01", None, "1970-01-02"],
        "nested": {"t": "00:00:00.000001"},
        "nanos": "1970-01-01T00:25:00.000000123",
        "nano_time": "00:00:01.000000001",
    }


@pytest.mark.parametrize(
    ("unscaled", "scale", "text"),
    [
        (1250, 2, "12.50"),
        (-5, 2, "-0.05"),
        (0, 2, "0.00"),
        (7, 0, "7"),
        (12, -2, "1200"),
        (0, -2, "0"),
        (-1, 10, "-0.0000000001"),
    ],
)
def test_decimal_text(unscaled: int, scale: int, text: str) -> None:
    assert decimal_text(unscaled, scale) == text


def test_a_key_that_is_not_json_matters_only_to_deletes() -> None:
    _, _, _, _, value = records("envelope_schema", "fx_types")[0]
    change = DebeziumDecoder().decode(b"Struct{id=1}", value, "t", 0, 0)
    assert (change.op, change.key, change.rejected) == ("snapshot", None, None)
    with pytest.raises(InvalidEvent) as caught:
        DebeziumDecoder().decode(b"Struct{id=1}", None, "t", 0, 1)
    assert caught.value.reason == "empty"
