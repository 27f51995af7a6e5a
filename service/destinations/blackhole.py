"""The blackhole destination: accepts every row and keeps nothing, like Vector's blackhole
sink. For measuring the pipeline without a destination's cost, and for dry runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from service.core.interfaces import Batch, BatchResult, DestinationWriter


class BlackholeConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    batch_size: int = Field(default=500, ge=1, le=100_000)


class BlackholeDestination(DestinationWriter):
    type_name = "blackhole"

    def __init__(self, config: BlackholeConfig) -> None:
        self.batch_size = config.batch_size
        self.rows = 0

    async def write(self, batch: Batch) -> BatchResult:
        self.rows += len(batch.rows)
        return BatchResult()
