"""Decodes one Debezium record (the JSON converter's output) into a normalized row change."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Context, Decimal
from typing import Any, Literal

import orjson

from service.core.events import Change, InvalidEvent, SourceChange, source_route
from service.core.models import Source

ChangeOp = Literal["upsert", "delete", "truncate", "snapshot"]
Converter = Callable[[Any], Any]

#: What Debezium writes for a column whose value the database did not send (an unchanged
#: TOASTed column in an update under REPLICA IDENTITY DEFAULT); bytes columns carry it base64.
UNAVAILABLE = "__debezium_unavailable_value"
UNAVAILABLE_BYTES = base64.b64encode(UNAVAILABLE.encode()).decode()

#: `source.snapshot` values that end a table's part of a snapshot.
SNAPSHOT_CLOSING = frozenset({"last", "last_in_data_collection"})

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_DAY_US = 86_400_000_000
_SCHEMA_PREFIX = b'{"schema":'
_PAYLOAD_MARK = b',"payload":'
_ENVELOPE_FIELDS = frozenset({"before", "after", "op", "source"})
_MAX_CACHED_SCHEMAS = 512
#: Enough digits that moving a float's decimal point never rounds.
_EXACT = Context(prec=100)


@dataclass(slots=True, frozen=True)
class DebeziumChange:
    """One record's change.

    `op`: `upsert` (c, u, streamed r), `snapshot` (r while `source.snapshot` says a snapshot
    runs, incremental ones excepted), `delete` (d, a flattened delete, a tombstone) or
    `truncate` (t). `row`: the row after the change for upsert and snapshot; for a delete the
    record key's fields (or `before` when the record has no key); None for a truncate.
    `rejected`: why the row's values could not be converted; `row` then holds them as they
    arrived. `unavailable`: columns left out of `row` because the database did not send their
    value. `emitted_ms`: `source.ts_ms`, the database commit (None for a tombstone)."""

    op: ChangeOp
    row: dict[str, Any] | None
    key: dict[str, Any] | None
    topic: str
    partition: int
    offset: int
    emitted_ms: int | None = None
    snapshot: str | None = None
    table: str | None = None
    lsn: int | None = None
    rejected: str | None = None
    unavailable: tuple[str, ...] = ()
    tombstone: bool = False

    @property
    def emitted_at(self) -> float | None:
        """The database's commit time in seconds since the epoch (`source.ts_ms`)."""
        return None if self.emitted_ms is None else self.emitted_ms / 1000

    @property
    def closes_snapshot(self) -> bool:
        """The last record of its table in a snapshot."""
        return self.op == "snapshot" and self.snapshot in SNAPSHOT_CLOSING

    @property
    def snapshot_id(self) -> str | None:
        """Names the snapshot a snapshot record belongs to: every record of one snapshot carries
        the position (LSN, else commit time) the connector read the table at."""
        if self.op != "snapshot":
            return None
        return f"lsn-{self.lsn}" if self.lsn is not None else f"ts-{self.emitted_ms}"


class RowRejected(ValueError):
    """A value of a row cannot be converted: the row is rejected, not the record's batch."""


# --- value conversions (Connect logical types to natural JSON) ---------------------------------


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise RowRejected(f"{what} must be an integer, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """The value's type and its first characters, for a reason."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=repr)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        return type(value).__name__
    return f"{type(value).__name__} {text[:40].decode(errors='replace')}"


def decimal_text(unscaled: int, scale: int) -> str:
    """The exact decimal `unscaled * 10**-scale` as text: (1250, 2) -> "12.50"."""
    sign = "-" if unscaled < 0 else ""
    digits = str(abs(unscaled))
    if scale <= 0:
        return sign + digits + "0" * -scale if unscaled else "0"
    digits = digits.rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _unscaled(value: Any) -> int:
    if not isinstance(value, str):
        raise RowRejected(f"decimal bytes must be a base64 string, got {_kind(value)}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RowRejected(f"decimal bytes are not base64: {value[:40]!r}") from None
    return int.from_bytes(raw, "big", signed=True)


def _number_text(value: Any, scale: int) -> str:
    """A decimal the converter wrote as a JSON number (`decimal.format=NUMERIC`): parsed as a
    float, exact when its shortest form has at most `scale` decimal places."""
    if type(value) is int:
        return decimal_text(value * 10**scale, scale) if scale >= 0 else str(value)
    if type(value) is float and math.isfinite(value):
        unscaled = Decimal(repr(value)).scaleb(scale, context=_EXACT)
        if unscaled != unscaled.to_integral_value():
            raise RowRejected(f"decimal {value!r} has more than {scale} decimal places")
        return decimal_text(int(unscaled), scale)
    raise RowRejected(f"decimal must be base64 bytes or a number, got {_kind(value)}")


def _decimal(scale: int) -> Converter:
    def convert(value: Any) -> str:
        if isinstance(value, str):
            return decimal_text(_unscaled(value), scale)
        return _number_text(value, scale)

    return convert


def _variable_decimal(value: Any) -> str:
    if not isinstance(value, dict):
        raise RowRejected(f"variable scale decimal must be an object, got {_kind(value)}")
    scale = _int(value.get("scale"), "variable scale decimal's scale")
    return decimal_text(_unscaled(value.get("value")), scale)


def _date(value: Any) -> str:
    days = _int(value, "date")
    try:
        return (_EPOCH_DATE + timedelta(days=days)).isoformat()
    except OverflowError:
        raise RowRejected(f"date {days} days from 1970-01-01 is out of range") from None


def _timestamp_us(us: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=us)).isoformat()
    except OverflowError:
        raise RowRejected(f"timestamp {us} us from 1970-01-01 is out of range") from None


def _timestamp_ms(value: Any) -> str:
    return _timestamp_us(_int(value, "timestamp") * 1000)


def _timestamp_micros(value: Any) -> str:
    return _timestamp_us(_int(value, "timestamp"))


def _timestamp_nanos(value: Any) -> str:
    us, ns = divmod(_int(value, "timestamp"), 1000)
    if not ns:
        return _timestamp_us(us)
    try:
        text = (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")
    except OverflowError:
        raise RowRejected(f"timestamp {value} ns from 1970-01-01 is out of range") from None
    return f"{text}{ns:03d}"


def _time_text(us: int, extra_digits: str = "") -> str:
    if not 0 <= us <= _DAY_US:  # 24:00:00 is a PostgreSQL time
        raise RowRejected(f"time {us} us is not within a day")
    seconds, fraction = divmod(us, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction:06d}{extra_digits}"


def _time_ms(value: Any) -> str:
    return _time_text(_int(value, "time") * 1000)


def _time_micros(value: Any) -> str:
    return _time_text(_int(value, "time"))


def _time_nanos(value: Any) -> str:
    us, ns = divmod(_int(value, "time"), 1000)
    return _time_text(us, f"{ns:03d}")


def _json(value: Any) -> Any:
    if not isinstance(value, str):
        raise RowRejected(f"JSON column must be a string, got {_kind(value)}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RowRejected(f"JSON column is not valid JSON: {exc}") from None


_LOGICAL: dict[str, Converter] = {
    "io.debezium.data.VariableScaleDecimal": _variable_decimal,
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Timestamp": _timestamp_ms,
    "org.apache.kafka.connect.data.Timestamp": _timestamp_ms,
    "io.debezium.time.MicroTimestamp": _timestamp_micros,
    "io.debezium.time.NanoTimestamp": _timestamp_nanos,
    "io.debezium.time.Time": _time_ms,
    "org.apache.kafka.connect.data.Time": _time_ms,
    "io.debezium.time.MicroTime": _time_micros,
    "io.debezium.time.NanoTime": _time_nanos,
    "io.debezium.data.Json": _json,
}


def field_converter(schema: Any) -> Converter | None:
    """The conversion a value of this Connect schema needs; None when it passes as it is
    (ZonedTimestamp, Uuid, strings, numbers...)."""
    if not isinstance(schema, dict):
        return None
    name = schema.get("name")
    if name == "org.apache.kafka.connect.data.Decimal":
        params = schema.get("parameters") or {}
        try:
            scale = int(params.get("scale", 0))
        except (TypeError, ValueError):
            raise InvalidEvent("schema", f"decimal scale {params.get('scale')!r}") from None
        return _decimal(scale)
    if name in _LOGICAL:
        return _LOGICAL[name]
    kind = schema.get("type")
    if kind == "struct":
        shape = RowShape.of(schema)
        return shape.convert_values if shape.converters else None
    if kind == "array":
        item = field_converter(schema.get("items"))
        if item is None:
            return None
        return lambda values: [None if v is None else item(v) for v in _list(values)]
    if kind == "map":
        item = field_converter(schema.get("values"))
        if item is None:
            return None
        return lambda values: {k: None if v is None else item(v) for k, v in _dict(values).items()}
    return None


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RowRejected(f"array must be a list, got {_kind(value)}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RowRejected(f"struct or map must be an object, got {_kind(value)}")
    return value


# --- shapes: converters built once per schema -------------------------------------------------


class RowShape:
    """The converters of one struct schema's fields: built once, applied to every row of it."""

    __slots__ = ("converters", "meta_fields")

    def __init__(self, converters: tuple[tuple[str, Converter], ...], meta: tuple[str, ...]):
        self.converters = converters
        #: Fields ExtractNewRecordState adds (`__op`, `__deleted`, ...): not the table's.
        self.meta_fields = meta

    @classmethod
    def of(cls, schema: dict[str, Any]) -> RowShape:
        converters: list[tuple[str, Converter]] = []
        meta: list[str] = []
        for f in schema.get("fields") or ():
            if not isinstance(f, dict) or not isinstance(f.get("field"), str):
                raise InvalidEvent("schema", "a struct field without a name")
            name = f["field"]
            if name.startswith("__"):
                meta.append(name)
                continue
            convert = field_converter(f)
            if convert is not None:
                converters.append((name, convert))
        return cls(tuple(converters), tuple(meta))

    def convert_values(self, row: Any) -> dict[str, Any]:
        """Converts a nested struct; raises RowRejected."""
        out = dict(_dict(row))
        for name, convert in self.converters:
            value = out.get(name)
            if value is not None:
                out[name] = convert(value)
        return out

    def convert(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with its values converted; raises RowRejected naming the column."""
        if not self.converters:
            return row
        out = dict(row)
        name = ""
        try:
            for name, convert in self.converters:
                value = out.get(name)
                if value is not None:
                    out[name] = convert(value)
        except RowRejected as exc:
            raise RowRejected(f"column {name!r}: {exc}") from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise RowRejected(f"column {name!r}: {type(exc).__name__}: {exc}") from None
        return out


_PLAIN = RowShape((), ())


@dataclass(slots=True, frozen=True)
class _ValueShape:
    envelope: bool
    #: The row's shape: `after`'s and `before`'s for the envelope, the record's when flattened.
    row: RowShape


def _value_shape(schema: Any) -> _ValueShape | None:
    if not isinstance(schema, dict):
        return None
    fields = {f.get("field"): f for f in schema.get("fields") or () if isinstance(f, dict)}
    if fields.keys() >= _ENVELOPE_FIELDS:
        after = fields["after"]
        return _ValueShape(True, RowShape.of(after) if isinstance(after, dict) else _PLAIN)
    return _ValueShape(False, RowShape.of(schema))


# --- the decoder --------------------------------------------------------------------------------


class DebeziumDecoder:
    """Decodes records of Debezium topics, each on its own: envelope or flattened, schemas or
    not, all detected per record. Keeps the shapes of the schemas it has seen (the JSON
    converter repeats the schema in every record); one decoder serves any number of topics.

    `decode` raises InvalidEvent (reasons `empty`, `json`, `schema`) for a record that is not a
    Debezium change at all: it goes to the DLQ. A row whose values cannot be converted comes
    back as a change with `rejected` set."""

    def __init__(self) -> None:
        self._value_shapes: dict[bytes, _ValueShape | None] = {}
        self._key_shapes: dict[bytes, RowShape] = {}

    def decode(
        self, key: bytes | None, value: bytes | None, topic: str, partition: int, offset: int
    ) -> DebeziumChange:
        key_row, key_rejected = self._key(key)
        where = (topic, partition, offset)
        if not value:
            if key_row is None:
                raise InvalidEvent(
                    "empty", "a record without value (tombstone) needs a key that is a JSON object"
                )
            return DebeziumChange(
                "delete", key_row, key_row, *where, tombstone=True, rejected=key_rejected
            )
        shape, payload = self._value(value)
        if payload is None:
            if key_row is None:
                raise InvalidEvent("empty", "a record with a null payload needs a key")
            return DebeziumChange(
                "delete", key_row, key_row, *where, tombstone=True, rejected=key_rejected
            )
        if not isinstance(payload, dict):
            raise InvalidEvent(
                "schema", f"a Debezium record is a JSON object, not {_kind(payload)}"
            )
        if shape is None:
            envelope = payload.keys() >= _ENVELOPE_FIELDS
            rows = _PLAIN
        else:
            envelope, rows = shape.envelope, shape.row
        if envelope:
            change = _from_envelope(payload, rows, key_row, where)
        else:
            change = _from_flat(payload, rows, key_row, where)
        if key_rejected and change.rejected is None:
            return replace(change, rejected=f"record key: {key_rejected}")
        return change

    def _key(self, key: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
        if not key:
            return None, None
        try:
            schema_bytes, schema, payload = _split(key, self._key_shapes)
        except InvalidEvent:
            return None, None  # a key of another converter: only deletes need it
        if not isinstance(payload, dict):
            return None, None
        if schema_bytes is not None and schema is None:
            shape = self._key_shapes[schema_bytes]
        else:
            shape = RowShape.of(schema) if isinstance(schema, dict) else _PLAIN
            if schema_bytes is not None:
                _remember(self._key_shapes, schema_bytes, shape)
        try:
            return shape.convert(payload), None
        except RowRejected as exc:
            return payload, str(exc)

    def _value(self, value: bytes) -> tuple[_ValueShape | None, Any]:
        schema_bytes, schema, payload = _split(value, self._value_shapes)
        if schema_bytes is not None and schema is None:
            return self._value_shapes[schema_bytes], payload
        shape = _value_shape(schema)
        if schema_bytes is not None:
            _remember(self._value_shapes, schema_bytes, shape)
        return shape, payload


def _remember(cache: dict[bytes, Any], schema_bytes: bytes, shape: Any) -> None:
    if len(cache) >= _MAX_CACHED_SCHEMAS:
        cache.clear()
    cache[schema_bytes] = shape


def _split(raw: bytes, known: dict[bytes, Any]) -> tuple[bytes | None, Any, Any]:
    """(schema bytes, schema, payload) of a record with the `{"schema", "payload"}` wrapper;
    (None, None, the value) without it or with a null schema.

    The JSON converter writes `{"schema":S,"payload":P}` with S repeated in every record. Bytes
    S in `known` were once parsed as one complete JSON value, so a record that starts with them
    has exactly that schema: only P is parsed, and `schema` comes back as None."""
    if raw.startswith(_SCHEMA_PREFIX):
        mark = raw.find(_PAYLOAD_MARK)
        if mark > 0 and raw.endswith(b"}"):
            schema_bytes = raw[len(_SCHEMA_PREFIX) : mark]
            try:
                payload = orjson.loads(raw[mark + len(_PAYLOAD_MARK) : -1])
                schema = None if schema_bytes in known else orjson.loads(schema_bytes)
            except orjson.JSONDecodeError:
                pass  # not laid out as the converter does: parsed whole below
            else:
                if schema_bytes in known or schema is not None:
                    return schema_bytes, schema, payload
                return None, None, payload
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("json", f"not valid JSON: {exc}") from None
    if isinstance(parsed, dict) and parsed.keys() == {"schema", "payload"}:
        return None, parsed["schema"], parsed["payload"]
    return None, None, parsed


def _converted(
    row: dict[str, Any], shape: RowShape, may_lack_values: bool
) -> tuple[dict[str, Any], str | None, tuple[str, ...]]:
    unavailable: tuple[str, ...] = ()
    if may_lack_values:
        values = row.values()
        if UNAVAILABLE in values or UNAVAILABLE_BYTES in values:
            unavailable = tuple(k for k, v in row.items() if v in (UNAVAILABLE, UNAVAILABLE_BYTES))
            row = {k: v for k, v in row.items() if k not in unavailable}
    try:
        return shape.convert(row), None, unavailable
    except RowRejected as exc:
        return row, str(exc), unavailable


def _source_int(value: Any) -> int | None:
    return value if type(value) is int else None


def _from_envelope(
    payload: dict[str, Any],
    shape: RowShape,
    key_row: dict[str, Any] | None,
    where: tuple[str, int, int],
) -> DebeziumChange:
    op = payload.get("op")
    source = payload.get("source")
    if not isinstance(source, dict):
        source = {}
    snapshot = source.get("snapshot")
    if snapshot == "false" or not isinstance(snapshot, str):
        snapshot = None
    table = source.get("table")
    if isinstance(table, str) and isinstance(source.get("schema"), str):
        table = f"{source['schema']}.{table}"
    meta = {
        "emitted_ms": _source_int(source.get("ts_ms")),
        "snapshot": snapshot,
        "table": table if isinstance(table, str) else None,
        "lsn": _source_int(source.get("lsn")),
    }
    if op in ("c", "u", "r"):
        after = payload.get("after")
        if not isinstance(after, dict):
            raise InvalidEvent("schema", f"a Debezium {op!r} record without `after`")
        row, rejected, unavailable = _converted(after, shape, op == "u")
        kind: ChangeOp = (
            "snapshot" if op == "r" and snapshot not in (None, "incremental") else "upsert"
        )
        return DebeziumChange(
            kind, row, key_row, *where, rejected=rejected, unavailable=unavailable, **meta
        )
    if op == "d":
        if key_row is not None:
            return DebeziumChange("delete", key_row, key_row, *where, **meta)
        before = payload.get("before")
        if not isinstance(before, dict):
            raise InvalidEvent("schema", "a Debezium delete without a record key or `before`")
        row, rejected, _ = _converted(before, shape, True)
        return DebeziumChange("delete", row, None, *where, rejected=rejected, **meta)
    if op == "t":
        return DebeziumChange("truncate", None, key_row, *where, **meta)
    raise InvalidEvent("schema", f"Debezium op {str(op)[:20]!r} is not a row change")


def _from_flat(
    payload: dict[str, Any],
    shape: RowShape,
    key_row: dict[str, Any] | None,
    where: tuple[str, int, int],
) -> DebeziumChange:
    meta_names = shape.meta_fields or [k for k in payload if k.startswith("__")]
    op = payload.get("__op")
    deleted = payload.get("__deleted") in ("true", True) or op == "d"
    snapshot = payload.get("__source_snapshot")
    if snapshot == "false" or not isinstance(snapshot, str):
        snapshot = None
    table = payload.get("__table")
    meta = {
        "emitted_ms": _source_int(payload.get("__source_ts_ms")),
        "snapshot": snapshot,
        "table": table if isinstance(table, str) else None,
        "lsn": _source_int(payload.get("__lsn")),
    }
    row = {k: v for k, v in payload.items() if k not in meta_names} if meta_names else payload
    if deleted:
        if key_row is not None:
            return DebeziumChange("delete", key_row, key_row, *where, **meta)
        row, rejected, _ = _converted(row, shape, True)
        return DebeziumChange("delete", row, None, *where, rejected=rejected, **meta)
    if op not in (None, "c", "u", "r"):
        raise InvalidEvent("schema", f"Debezium op {str(op)[:20]!r} is not a row change")
    row, rejected, unavailable = _converted(row, shape, op in ("u", None))
    kind: ChangeOp = "snapshot" if op == "r" and snapshot not in (None, "incremental") else "upsert"
    return DebeziumChange(
        kind, row, key_row, *where, rejected=rejected, unavailable=unavailable, **meta
    )


# --- changes as events -------------------------------------------------------------------------


def as_event(change: DebeziumChange, route: str) -> SourceChange:
    """The change as an event of the source's route (`source_route`): every model over the
    source takes it. Snapshot records carry the snapshot's id, and its last one closes it."""
    rows = [change.row] if change.row is not None else []
    emitted = change.emitted_at
    if change.op == "truncate":
        return SourceChange(model_id=route, op="delete", rows=[], emitted_at=emitted, truncate=True)
    if change.op == "delete":
        return SourceChange(
            model_id=route,
            op="delete",
            rows=rows,
            emitted_at=emitted,
            rejected=change.rejected,
            strict=False,
        )
    if change.op == "snapshot":
        return SourceChange(
            model_id=route,
            op="snapshot",
            rows=rows,
            emitted_at=emitted,
            snapshot_id=change.snapshot_id,
            last=change.closes_snapshot,
            rejected=change.rejected,
            unavailable=change.unavailable,
        )
    return SourceChange(
        model_id=route,
        op="upsert",
        rows=rows,
        emitted_at=emitted,
        rejected=change.rejected,
        unavailable=change.unavailable,
    )


RecordDecoder = Callable[[bytes | None, bytes | None], Change]


class DebeziumSources:
    """Gives each source of format `debezium` the decoder of its topic; the decoders share the
    schema shapes seen (one decoder serves any number of topics)."""

    def __init__(self) -> None:
        self._decoder = DebeziumDecoder()

    def __call__(self, source: Source) -> Callable[[bytes | None, bytes | None], Change] | None:
        if source.configuration.get("format") != "debezium":
            return None
        topic = str(source.configuration.get("topic", ""))
        route = source_route(source.id)
        decode = self._decoder.decode

        def decoder(key: bytes | None, value: bytes | None) -> Change:
            # Partition and offset only name the record in the change; the consumer keeps them.
            return as_event(decode(key, value, topic, -1, -1), route)

        return decoder
