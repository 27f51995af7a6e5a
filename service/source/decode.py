"""Decodes one Kafka record into a ChangeEvent, or says why it cannot be one."""

from __future__ import annotations

from pydantic import ValidationError

from service.core.events import ChangeEvent, InvalidEvent

MAX_ERROR_MESSAGE = 500


def decode_event(key: bytes | None, value: bytes | None) -> ChangeEvent:
    """Raises InvalidEvent with a reason from a fixed set: `empty`, `json`, `schema`. The record
    key is free (the model id, or the row's key to spread a model over partitions)."""
    if not value:
        raise InvalidEvent("empty", "the message has no value")
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
