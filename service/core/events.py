"""Change events as they arrive on Kafka (DESIGN: wire contracts, input), and as the pipeline
carries them once decoded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

EventOp = Literal["upsert", "delete", "snapshot"]


class ChangeEvent(BaseModel):
    """One Kafka message: a model's row changes. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model_id: str = Field(alias="modelId", min_length=1, max_length=200)
    op: EventOp
    rows: list[dict[str, Any]]
    snapshot_id: str | None = Field(default=None, alias="snapshotId", min_length=1)
    last: bool = False
    event_id: str | None = Field(default=None, alias="eventId")
    emitted_at: datetime | None = Field(default=None, alias="emittedAt")

    @model_validator(mode="after")
    def _snapshot_fields(self) -> ChangeEvent:
        if self.op == "snapshot" and self.snapshot_id is None:
            raise ValueError("a snapshot event needs snapshotId")
        return self


@dataclass(slots=True)
class Change:
    """A decoded event as the pipeline carries it: ChangeEvent's fields without pydantic's
    instance machinery, as the decoder builds one a record. Only the decoder makes one from
    Kafka, and only from what ChangeEvent accepts (`of`, or its own check of the same rules).
    `emitted_at` is in seconds since the epoch, as rows carry it."""

    model_id: str
    op: EventOp
    rows: list[dict[str, Any]]
    snapshot_id: str | None = None
    last: bool = False
    event_id: str | None = None
    emitted_at: float | None = None

    @classmethod
    def of(cls, event: ChangeEvent) -> Change:
        """Raises InvalidEvent when `emittedAt` has no place on the epoch's scale."""
        return cls(
            event.model_id,
            event.op,
            event.rows,
            event.snapshot_id,
            event.last,
            event.event_id,
            None if event.emitted_at is None else epoch_seconds(event.emitted_at),
        )

    def replace(self, **changes: Any) -> Change:
        """A copy with these fields changed; a SourceChange stays one."""
        return dataclasses.replace(self, **changes)


@dataclass(slots=True)
class SourceChange(Change):
    """A change decoded from another topic format (a Debezium record). `model_id` names the
    source's route (`source_route`), which reaches every model of the source. `rejected`: why
    its row can't be used (each route rejects it); `truncate`: every row of the table is gone
    (`rows` is empty); `unavailable`: columns the database did not send; `strict`: a route whose
    columns the row lacks rejects it (the table dropped one)."""

    rejected: str | None = None
    truncate: bool = False
    unavailable: tuple[str, ...] = ()
    strict: bool = True


def source_route(source_id: str) -> str:
    """The route name of a source whose records feed every model over it: never a model id
    (those are numeric)."""
    return f"source:{source_id}"


def epoch_seconds(value: datetime) -> float:
    """`value.timestamp()`; raises InvalidEvent (`schema`) for a time it can't place, such as a
    time without an offset in the first hours of year 1, read in the local zone."""
    try:
        return value.timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidEvent(
            "schema", f"emittedAt: {value.isoformat()} is out of the range of times"
        ) from None


class InvalidEvent(ValueError):
    """An event that cannot be decoded or validated; it goes to the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a metric label from a fixed set
