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


class InvalidEvent(ValueError):
    """An event that cannot be decoded or validated; it goes to the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a metric label from a fixed set
