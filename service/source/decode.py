"""Decodes one Kafka record into a ChangeEvent, or says why it cannot be one."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from orjson import JSONDecodeError
from orjson import loads as _loads
from pydantic import ValidationError
from pydantic_core import TzInfo

from service.core.events import ChangeEvent, InvalidEvent

MAX_ERROR_MESSAGE = 500

_OPS = frozenset(("upsert", "delete", "snapshot"))
#: Keys pydantic also reads, by field name (populate_by_name): the validated path decides them.
_FIELD_NAMES = frozenset(("model_id", "snapshot_id", "event_id", "emitted_at"))
#: orjson turns an integer beyond 64 bits into a float where pydantic keeps the int, so a float
#: this large may have been an integer: the validated path decides it.
_BIG = 2.0**63
#: pydantic's JSON parser refuses nesting past about 200 levels; a row this deep is left to it.
_MAX_DEPTH = 100
#: The forms of emittedAt read here; pydantic reads these the same way (and others, which go
#: the validated path). ASCII digits only: `\d` would take other scripts' digits too.
_STAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,6}))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))?"
).fullmatch
_ZONES: dict[int, TzInfo] = {}

_new = object.__new__
_set = object.__setattr__


def decode_event(key: bytes | None, value: bytes | None) -> ChangeEvent:
    """Raises InvalidEvent with a reason from a fixed set: `empty`, `json`, `schema`. The record
    key is free (the model id, or the row's key to spread a model over partitions)."""
    return decode_event_lean(key, value)[0]


def decode_event_lean(key: bytes | None, value: bytes | None) -> tuple[ChangeEvent, bool]:
    """`decode_event`, and whether the event's numbers are all finite for sure. Most events
    are read by orjson and checked field by field, without pydantic; orjson refuses NaN,
    Infinity and numbers beyond a double, so those events are finite (True). Anything
    orjson refuses or the check is not sure of is validated by pydantic as the contract
    says, giving the same event or the same InvalidEvent (False: it may hold NaN)."""
    if not value:
        raise InvalidEvent("empty", "the message has no value")
    event = _lean(value)
    if event is not None:
        return event, True
    return _validated(value), False


def _validated(value: bytes) -> ChangeEvent:
    try:
        event = ChangeEvent.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise InvalidEvent("json", f"not valid JSON: {first['msg']}") from None
        where = ".".join(str(p) for p in first["loc"]) or "event"
        detail = f"{where}: {first['msg']}"
        if exc.error_count() > 1:
            detail += f" (and {exc.error_count() - 1} more errors)"
        raise InvalidEvent("schema", detail[:MAX_ERROR_MESSAGE]) from None
    except RecursionError:
        raise InvalidEvent("json", "nested too deeply to decode") from None
    return event


def _lean(value: bytes) -> ChangeEvent | None:
    """The event as pydantic would validate it, or None when that is not certain."""
    try:
        doc = _loads(value)
    except JSONDecodeError:
        return None
    if type(doc) is not dict:
        return None
    model_id = doc.get("modelId")
    op = doc.get("op")
    rows = doc.get("rows")
    if (
        type(model_id) is not str
        or not 0 < len(model_id) <= 200
        or type(op) is not str
        or op not in _OPS
        or type(rows) is not list
        or not _rows_fine(rows)
    ):
        return None
    fields = {"model_id", "op", "rows"}
    snapshot_id: str | None = None
    last = False
    event_id: str | None = None
    emitted_at: datetime | None = None
    if len(doc) > 3:
        for name, x in doc.items():
            if name == "snapshotId":
                if x is not None and (type(x) is not str or not x):
                    return None
                snapshot_id = x
                fields.add("snapshot_id")
            elif name == "last":
                if type(x) is not bool:
                    return None
                last = x
                fields.add("last")
            elif name == "eventId":
                if x is not None and type(x) is not str:
                    return None
                event_id = x
                fields.add("event_id")
            elif name == "emittedAt":
                if x is not None:
                    emitted_at = _stamp(x)
                    if emitted_at is None:
                        return None
                fields.add("emitted_at")
            elif name in _FIELD_NAMES:
                return None
            elif (type(x) is dict or type(x) is list) and name != "rows" and not _nested_fine(x, 2):
                return None  # ignored, but pydantic's parser refuses it when too deep
    if op == "snapshot" and snapshot_id is None:
        return None
    # What model_construct does, without its per-field alias lookups; the test holds it to
    # what validation builds.
    event = _new(ChangeEvent)
    _set(
        event,
        "__dict__",
        {
            "model_id": model_id,
            "op": op,
            "rows": rows,
            "snapshot_id": snapshot_id,
            "last": last,
            "event_id": event_id,
            "emitted_at": emitted_at,
        },
    )
    _set(event, "__pydantic_fields_set__", fields)
    _set(event, "__pydantic_extra__", None)
    _set(event, "__pydantic_private__", None)
    return event


def _rows_fine(rows: list[Any]) -> bool:
    for row in rows:
        if type(row) is not dict:
            return False
        for x in row.values():
            t = type(x)
            if t is float:
                if not -_BIG < x < _BIG:
                    return False
            elif (t is dict or t is list) and not _nested_fine(x, 4):
                return False
    return True


def _nested_fine(value: dict[str, Any] | list[Any], depth: int) -> bool:
    if depth > _MAX_DEPTH:
        return False
    for x in value.values() if type(value) is dict else value:
        t = type(x)
        if t is float:
            if not -_BIG < x < _BIG:
                return False
        elif (t is dict or t is list) and not _nested_fine(x, depth + 1):
            return False
    return True


def _stamp(text: object) -> datetime | None:
    if type(text) is not str:
        return None
    m = _STAMP(text)
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, utc, sign, zh, zm = m.groups()
    zone: TzInfo | None = None
    if utc is not None:
        zone = _zone(0)
    elif sign is not None:
        if int(zh) > 23 or int(zm) > 59:
            return None
        offset = int(zh) * 3600 + int(zm) * 60
        zone = _zone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(fraction.ljust(6, "0")) if fraction else 0,
            zone,
        )
    except ValueError:
        return None


def _zone(offset: int) -> TzInfo:
    zone = _ZONES.get(offset)
    if zone is None:
        zone = _ZONES[offset] = TzInfo(offset)
    return zone
