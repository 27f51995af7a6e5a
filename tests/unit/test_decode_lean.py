"""The lean decoder (orjson and a field check) accepts and rejects exactly what pydantic's
validation does, builds the same event, and tells the fetch loop which events may hold
non-finite numbers."""

from __future__ import annotations

import dataclasses
import json
import string
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.core.events import Change, ChangeEvent, InvalidEvent, SourceChange
from service.core.metrics import Metrics
from service.source.decode import _rfc3339_seconds, decode_event, decode_event_lean
from service.source.kafka import KafkaSource

TOPIC = "model-changes"
TYPICAL = orjson.dumps(
    {
        "modelId": "42",
        "op": "upsert",
        "rows": [
            {
                "id": 123456,
                "email": "user123456@example.com",
                "name": "Ada Lovelace",
                "plan": "pro",
                "score": 87.5,
                "active": True,
                "country": "GB",
                "seats": 12,
                "created": "2024-05-01T12:00:00Z",
                "note": None,
            }
        ],
        "eventId": "0f8e6a2c-4b1d-4f7e-9a55-1c2d3e4f5a6b",
        "emittedAt": "2024-05-01T12:00:00.123Z",
    }
)


def validated(value: bytes) -> tuple[Any, ...]:
    """What pydantic's validation makes of a value, as the contract defines it."""
    if not value:
        return ("invalid", "empty")
    try:
        event = ChangeEvent.model_validate_json(value)
    except ValidationError as exc:
        reason = "json" if exc.errors()[0]["type"] == "json_invalid" else "schema"
        return ("invalid", reason)
    except RecursionError:
        return ("invalid", "json")
    fields = event.model_dump()
    if event.emitted_at is not None:  # carried as seconds since the epoch
        try:
            fields["emitted_at"] = event.emitted_at.timestamp()
        except (ValueError, OverflowError):
            return ("invalid", "schema")
    # repr tells 1 from 1.0 and -0.0 from 0.0.
    return ("event", repr(fields))


def described(event: Change) -> tuple[Any, ...]:
    assert type(event) is Change
    return ("event", repr(dataclasses.asdict(event)))


def decoded(value: bytes) -> tuple[Any, ...]:
    try:
        event, _ = decode_event_lean(None, value)
    except InvalidEvent as exc:
        return ("invalid", exc.reason)
    return described(event)


def assert_same(value: bytes) -> None:
    assert decoded(value) == validated(value), value


# -- generated values --------------------------------------------------------------------------

texts = st.text(max_size=12) | st.text(alphabet="é日\u0000\U0001f600\u2028 ", max_size=4)
numbers = (
    st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.0, -0.0, 1e300, 1e-320, 9.3e18, -9.3e18, 2.0**63, 1.7976931348623157e308])
)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
rows = st.lists(st.dictionaries(texts, json_values, max_size=6), max_size=4)


def _stamps() -> st.SearchStrategy[Any]:
    zones = st.sampled_from(["Z", "", "+00:00", "-00:00", "+02:00", "-05:30", "+23:59", "+24:00"])
    fractions = st.sampled_from(["", ".1", ".12", ".123", ".123456", ".1234567", "."])
    formatted = st.builds(
        lambda d, f, z: d.strftime("%Y-%m-%dT%H:%M:%S") + f + z,
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        fractions,
        zones,
    )
    odd = st.sampled_from(
        [
            "2024-05-01",
            "2024-05-01 12:00:00Z",
            "2024-05-01t12:00:00z",
            "2024-05-01T12:00:60Z",
            "2024-02-30T12:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+02:00:30",
            "2024-05-01T12:00Z",
            "2024-05-01T12Z",
            "0000-01-01T00:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00+02:60",
            "20240501T120000Z",
            "2024-W18-3",
            "\u0662\u0660\u0662\u0664-05-01T12:00:00Z",
            "",
            "now",
        ]
    )
    return formatted | odd | st.integers(-(10**12), 10**12) | st.floats() | scalars


stamps = _stamps()


def field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value, or the field left out."""
    return st.just(MISSING) | values


MISSING = object()
model_ids = st.sampled_from(["7", "a" * 200, "a" * 201, "", " "]) | texts | numbers | st.none()
ops = st.sampled_from(["upsert", "delete", "snapshot", "Upsert", "merge", ""]) | scalars
row_lists = rows | json_values
snapshot_ids = st.sampled_from(["s1", ""]) | scalars
lasts = st.sampled_from([True, False, 0, 1, 2, "true", "false", "yes", 1.0, 0.5]) | scalars
extras = st.dictionaries(
    st.sampled_from(["model_id", "snapshot_id", "event_id", "emitted_at", "x", "Op", "rows "])
    | texts,
    json_values,
    max_size=3,
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = draw(extras)
    for name, values in [
        ("modelId", model_ids),
        ("op", ops),
        ("rows", row_lists),
        ("snapshotId", snapshot_ids),
        ("last", lasts),
        ("eventId", scalars),
        ("emittedAt", stamps),
    ]:
        value = draw(field(values))
        if value is not MISSING:
            doc[name] = value
    return doc


@st.composite
def likely_events(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events: every field right, at most one of them wrong."""
    op = draw(st.sampled_from(["upsert", "delete", "snapshot"]))
    doc: dict[str, Any] = {"modelId": draw(st.text(min_size=1, max_size=5)), "op": op}
    doc["rows"] = draw(rows)
    if op == "snapshot" or draw(st.booleans()):
        doc["snapshotId"] = draw(st.text(min_size=1, max_size=5))
    if draw(st.booleans()):
        doc["last"] = draw(st.booleans())
    if draw(st.booleans()):
        doc["eventId"] = draw(st.none() | st.text(max_size=5))
    if draw(st.booleans()):
        doc["emittedAt"] = draw(stamps)
    if draw(st.booleans()):
        wrong = draw(st.sampled_from(sorted(doc)))
        doc[wrong] = draw(json_values)
    doc.update(draw(extras))
    return doc


def to_json(doc: Any, ensure_ascii: bool) -> bytes:
    # json writes NaN, Infinity and integers of any size, as a careless producer could.
    return json.dumps(doc, ensure_ascii=ensure_ascii).encode()


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(events() | likely_events(), st.booleans())
def test_generated_events_decode_as_validation_does(doc: dict[str, Any], ascii: bool) -> None:
    assert_same(to_json(doc, ascii))


BORDERS = {
    "modelId": ["a" * 200, "a" * 201, "日" * 200, "日" * 201, "", " ", 7, None, ["7"]],
    "op": ["upsert", "delete", "snapshot", "UPSERT", "", None, 1, ["upsert"], {"op": 1}],
    "rows": [[], [{}], [[]], [1], [None], {"id": 1}, None, "[]", [{"a": [1, {"b": 2.5}]}]],
    "snapshotId": ["s", "", None, 1, True, ["s"]],
    "last": [True, False, None, 0, 1, 1.0, "true", "false", "1", "on", [True]],
    "eventId": ["e", "", None, 1, 1.5, False, {"e": 1}],
    "emittedAt": ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.1234567Z", 1700000000, 1.5, ""],
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in BORDERS.items() for value in values]
)
@pytest.mark.parametrize("op", ["upsert", "snapshot"])
def test_each_field_at_its_borders_decodes_as_validation_does(
    name: str, value: Any, op: str
) -> None:
    doc = {"modelId": "7", "op": op, "rows": [{"id": 1}], "snapshotId": "s1", name: value}
    assert_same(orjson.dumps(doc))
    del doc["snapshotId"]
    doc[name] = value
    assert_same(orjson.dumps(doc))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_json_that_is_no_object_decodes_as_validation_does(doc: Any) -> None:
    assert_same(to_json(doc, False))


@given(st.binary(max_size=80))
@example(b"\xef\xbb\xbf{}")
@example(b"\xff")
@example(b" ")
def test_garbage_decodes_as_validation_does(value: bytes) -> None:
    assert_same(value)


@given(likely_events(), st.data())
def test_a_damaged_event_decodes_as_validation_does(
    doc: dict[str, Any], data: st.DataObject
) -> None:
    value = to_json(doc, False)
    at = data.draw(st.integers(0, len(value)))
    cut = data.draw(st.integers(0, 3))
    insert = data.draw(
        st.sampled_from([b"", b",", b"}", b"]", b'"', b"\\", b"\x00", b"\xc3", b"x"])
    )
    assert_same(value[:at] + insert + value[at + cut :])


# fmt: off
LITERALS = [
    "0", "-0", "-0.0", "0.0", "1E2", "1e-7", "1.5e-400", "1e400", "-1e400", "1e308",
    "1.7976931348623157e308", "1.7976931348623159e308", "4.9e-324", "2.4e-324",
    "9223372036854775807", "9223372036854775808", "18446744073709551615",
    "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
    "123456789012345678901234567890", "0.1000000000000000055511151231257827", "NaN", "-NaN",
    "Infinity", "-Infinity", "+1", "01", ".5", "1.", "1e", "0x10",
]
# fmt: on
number_literals = st.sampled_from(LITERALS) | st.builds(
    lambda m, f, e: m + f + e,
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})", fullmatch=True),
    st.sampled_from(["", ".5", ".000001", ".12345678901234567890"]),
    st.sampled_from(["", "e5", "E-5", "e+300", "e-310", "e309"]),
)


@given(st.lists(number_literals, min_size=1, max_size=4))
def test_number_literals_decode_as_validation_does(literals: list[str]) -> None:
    cells = ", ".join(f'"c{i}": {lit}' for i, lit in enumerate(literals))
    value = f'{{"modelId": "7", "op": "upsert", "rows": [{{{cells}}}]}}'.encode()
    assert_same(value)
    assert_same(f'{{"modelId": "7", "op": "upsert", "rows": [], "x": [{literals[0]}]}}'.encode())


keys = st.sampled_from(["modelId", "model_id", "op", "rows", "snapshotId", "last", "x"])
values = st.sampled_from(['"7"', '"8"', '"upsert"', '"delete"', "[]", '[{"a": 1}]', "true", '"s"'])


@given(st.lists(st.tuples(keys, values), max_size=8))
def test_repeated_keys_decode_as_validation_does(pairs: list[tuple[str, str]]) -> None:
    body = ", ".join(f'"{k}": {v}' for k, v in pairs)
    assert_same(("{" + body + "}").encode())
    row = ", ".join(f'"{k}": {v}' for k, v in pairs)
    assert_same(f'{{"modelId": "7", "op": "upsert", "rows": [{{{row}}}]}}'.encode())


@given(st.integers(1, 260), st.sampled_from(["rows", "row", "extra"]), st.booleans())
@example(98, "row", False)
@example(197, "row", True)
@example(198, "row", False)
@example(199, "extra", False)
@example(200, "extra", False)
def test_deep_nesting_decodes_as_validation_does(depth: int, where: str, lists: bool) -> None:
    opening, closing = ("[", "]") if lists else ('{"k": ', "}")
    deep = opening * depth + ("[]" if lists else "1") + closing * depth
    value = {
        "rows": f'{{"modelId": "7", "op": "upsert", "rows": {deep}}}',
        "row": f'{{"modelId": "7", "op": "upsert", "rows": [{{"a": {deep}}}]}}',
        "extra": f'{{"modelId": "7", "op": "upsert", "rows": [], "x": {deep}}}',
    }[where]
    assert_same(value.encode())


ascii_text = st.text(alphabet=string.ascii_letters + string.digits + "-_ ", max_size=8)
plain_rows = st.lists(
    st.dictionaries(
        ascii_text,
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e18, max_value=1e18)
        | ascii_text
        | st.lists(st.integers(0, 9), max_size=3),
        max_size=10,
    ),
    max_size=5,
)


@st.composite
def rfc3339_like(draw: st.DrawFn) -> str:
    """Times in or near the form the decoder reads without pydantic: any instant, fractions
    of 0-7 digits, `Z` or offsets with hours and minutes past their ranges."""
    at = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
    digits = draw(st.integers(0, 7))
    fraction = "." + f"{at.microsecond:06d}{draw(st.integers(0, 9))}"[:digits] if digits else ""
    sign, hours, minutes = (
        draw(st.sampled_from("+-")),
        draw(st.integers(0, 25)),
        draw(st.integers(0, 61)),
    )
    zone = draw(st.just("Z") | st.just(f"{sign}{hours:02d}:{minutes:02d}"))
    return at.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone


@settings(max_examples=1000)
@given(rfc3339_like())
def test_times_in_the_usual_form_decode_as_validation_does(stamp: str) -> None:
    assert_same(orjson.dumps({"modelId": "7", "op": "upsert", "rows": [], "emittedAt": stamp}))


def test_the_usual_forms_of_a_time_are_read_without_pydantic() -> None:
    """Not a vacuous equality: the forms producers write take the quick reading."""
    for stamp in ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00+02:00"]:
        assert _rfc3339_seconds(stamp) == datetime.fromisoformat(stamp).timestamp()
    for stamp in ["2024-05-01 12:00:00Z", "2024-05-01t12:00:00z", "2024-05-01T12:00:00+0200"]:
        assert _rfc3339_seconds(stamp) is None


@pytest.fixture
def local_time_is_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_time_is_utc")
def test_a_time_out_of_the_epochs_range_is_refused_as_schema() -> None:
    """Without an offset a time is local; in UTC the first moment of year 1 can't be placed,
    and such an event goes to the DLQ instead of stopping ingest."""
    value = b'{"modelId": "7", "op": "upsert", "rows": [], "emittedAt": "0001-01-01T00:00:00"}'
    with pytest.raises(InvalidEvent) as refused:
        decode_event(b"7", value)
    assert refused.value.reason == "schema"
    assert "emittedAt" in str(refused.value)


@given(
    st.sampled_from(["upsert", "delete", "snapshot"]),
    plain_rows,
    st.booleans(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])),
)
def test_ordinary_events_take_the_lean_path(
    op: str, rows: list[dict[str, Any]], last: bool, at: datetime
) -> None:
    """Not a vacuous equality: the usual events never need validation, and come out finite."""
    doc = {"modelId": "12", "op": op, "rows": rows, "snapshotId": "s", "last": last}
    doc |= {"eventId": "e", "emittedAt": at.isoformat(), "extra": {"a": [1]}}
    value = orjson.dumps(doc)
    event, finite = decode_event_lean(b"12", value)
    assert finite
    assert described(event) == validated(value)


def test_a_typical_event_is_finite_and_equal_to_the_validated_one() -> None:
    event, finite = decode_event_lean(b"42", TYPICAL)
    assert finite
    assert event == Change.of(ChangeEvent.model_validate_json(TYPICAL))
    assert event.emitted_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC).timestamp()
    assert decode_event(b"42", TYPICAL) == event


def test_a_change_copies_with_updates_and_keeps_its_type() -> None:
    event, _ = decode_event_lean(b"42", TYPICAL)
    copy = event.replace(rows=[], last=True)
    assert (copy.rows, copy.last, copy.model_id, copy.event_id) == ([], True, "42", event.event_id)
    assert event.rows and not event.last
    source = SourceChange(model_id="source:1", op="upsert", rows=[], truncate=True)
    assert source.replace(last=True) == SourceChange(
        model_id="source:1", op="upsert", rows=[], last=True, truncate=True
    )


@pytest.mark.parametrize(
    "value",
    [
        b'{"modelId": "7", "op": "upsert", "rows": [{"a": NaN}]}',
        b'{"modelId": "7", "op": "upsert", "rows": [{"a": 1e400}]}',
        b'{"modelId": "7", "op": "upsert", "rows": [{"a": 123456789012345678901234567890}]}',
        b'{"modelId": "7", "op": "upsert", "rows": [], "last": 1}',
    ],
)
def test_events_orjson_does_not_take_are_validated_and_not_finite(value: bytes) -> None:
    event, finite = decode_event_lean(b"7", value)
    assert not finite
    assert described(event) == validated(value)


def test_invalid_events_keep_their_reason_and_message() -> None:
    for value, reason, message in [
        (b"", "empty", "the message has no value"),
        (b'{"modelId": "7", ', "json", "not valid JSON: Invalid JSON: EOF while parsing"),
        (b"[1, 2]", "schema", "event: Input should be an object"),
        (b'{"modelId": "7", "op": "snapshot", "rows": []}', "schema", "event: Value error"),
        (b'{"op": "merge", "rows": 1}', "schema", "modelId: Field required (and 2 more errors)"),
    ]:
        with pytest.raises(InvalidEvent) as info:
            decode_event_lean(b"7", value)
        assert info.value.reason == reason
        assert str(info.value).startswith(message)


# -- the fetch loop ----------------------------------------------------------------------------


class Consumer:
    """Hands out one fetch of the given records (the consumer's side fetch reads)."""

    def __init__(self, records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        self.records = records

    async def getmany(
        self, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        records, self.records = self.records, {}
        return records

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass


def records(topic: str, *values: bytes | None) -> dict[TopicPartition, list[Any]]:
    tp = TopicPartition(topic, 0)
    return {
        tp: [
            ConsumerRecord(topic, 0, i, 0, 0, b"7", v, None, 1, len(v or b""), [])
            for i, v in enumerate(values)
        ]
    }


def event_json(cell: str) -> bytes:
    return f'{{"modelId": "7", "op": "upsert", "rows": [{{"id": 1, "v": {cell}}}]}}'.encode()


async def fetched(
    batch_records: dict[TopicPartition, list[Any]],
    decoders: dict[str, Callable[[bytes | None, bytes | None], Change]] | None = None,
) -> tuple[list[Change], set[int], int]:
    source = KafkaSource(Consumer(batch_records), Metrics())  # type: ignore[arg-type]
    source.subscribe({tp.topic for tp in batch_records}, decoders)
    batch = await source.fetch()
    return batch.events, batch.suspect, len(batch.dead)


async def test_own_events_are_suspect_only_when_they_may_hold_non_finite_numbers() -> None:
    events, suspect, dead = await fetched(
        records(
            TOPIC,
            event_json("1.5"),  # 0: read by orjson
            event_json("1.5e-300"),  # 1: a long exponent, but orjson read it, so finite
            event_json("NaN"),  # 2: validated, holds NaN
            event_json("-Infinity"),  # 3
            event_json("1e400"),  # 4: a double's overflow
            b'{"modelId": "7", "op": "upsert", "rows": [], "last": 1}',  # 5: validated, no hint
            b"{",  # dead
            event_json('"NaN"'),  # 6: a string, read by orjson
        )
    )
    assert dead == 1
    assert len(events) == 7
    assert suspect == {2, 3, 4}
    assert events[1].rows == [{"id": 1, "v": 1.5e-300}]
    assert events[6].rows == [{"id": 1, "v": "NaN"}]


async def test_events_of_other_formats_are_still_looked_at_for_non_finite_numbers() -> None:
    seen: list[bytes | None] = []

    def decoder(key: bytes | None, value: bytes | None) -> Change:
        seen.append(value)
        return SourceChange(model_id="source:a", op="upsert", rows=[])

    events, suspect, dead = await fetched(
        records("dbz.public.t", b'{"v": 1.5}', b'{"v": "NaN"}', b'{"v": 1.5e+300}'),
        {"dbz.public.t": decoder},
    )
    assert seen == [b'{"v": 1.5}', b'{"v": "NaN"}', b'{"v": 1.5e+300}']
    assert (len(events), dead) == (3, 0)
    assert suspect == {1, 2}
