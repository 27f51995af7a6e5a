"""Change events as they arrive on Kafka (DESIGN: wire contracts, input)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ChangeEvent(BaseModel):
    """One Kafka message: a model's row changes. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    model_id: str = Field(alias="modelId", min_length=1, max_length=200)
    op: Literal["upsert", "delete", "snapshot"]
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


class SourceChange(ChangeEvent):
    """A change decoded from another topic format (a Debezium record), built without
    validation. `model_id` names the source's route (`source_route`), which reaches every model
    of the source. `rejected`: why its row can't be used (each route rejects it); `truncate`:
    every row of the table is gone (`rows` is empty); `unavailable`: columns the database did
    not send; `strict`: a route whose columns the row lacks rejects it (the table dropped one)."""

    rejected: str | None = None
    truncate: bool = False
    unavailable: tuple[str, ...] = ()
    strict: bool = True


def source_route(source_id: str) -> str:
    """The route name of a source whose records feed every model over it: never a model id
    (those are numeric)."""
    return f"source:{source_id}"


class InvalidEvent(ValueError):
    """An event that cannot be decoded or validated; it goes to the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a metric label from a fixed set
