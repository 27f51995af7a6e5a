"""Request and response bodies of the REST API (Hightouch API v1 shapes, camelCase)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from service.core.models import Destination, Model, NumericId, Slug
from service.core.specs import Spec

T = TypeVar("T")


Body = Spec


class ModelOut(Model):
    """A model as the API shows it: with the ids of the syncs that use it."""

    syncs: list[str] = Field(default_factory=list)


class DestinationOut(Destination):
    syncs: list[str] = Field(default_factory=list)


class TriggerBody(Body):
    full_resync: bool = False
    #: Ours: take what is pending as synced without sending it.
    reset_cdc: bool = Field(default=False, alias="resetCDC")


class TriggerBySyncBody(Body):
    sync_id: NumericId | None = None
    sync_slug: Slug | None = None
    full_resync: bool = False
    reset_cdc: bool = Field(default=False, alias="resetCDC")


class TriggerAnswer(Body):
    id: str


class ErrorBody(BaseModel):
    message: str
    details: dict[str, str] | str | None = None


class Page(Body, Generic[T]):
    data: list[T]
    has_more: bool


# --- query strings ---------------------------------------------------------------------


class Query(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class CatalogQuery(Query):
    name: str | None = None
    slug: str | None = None
    order_by: Literal["id", "name", "slug", "createdAt", "updatedAt"] = "id"


class SyncQuery(Query):
    slug: str | None = None
    model_id: NumericId | None = None
    after: AwareDatetime | None = None
    before: AwareDatetime | None = None
    order_by: Literal["id", "slug", "createdAt", "updatedAt", "lastRunAt"] = "id"


class RunsQuery(Query):
    limit: int = Field(default=5, ge=1, le=1000)
    run_id: NumericId | None = None
    after: AwareDatetime | None = None
    before: AwareDatetime | None = None
    within: int | None = Field(default=None, ge=1, le=525_600)
    order_by: Literal["id", "createdAt", "startedAt", "finishedAt"] = "createdAt"


class RowsQuery(Query):
    status: Literal["failed", "pending", "rejected"] = "failed"


class PendingRowOut(Body):
    """A row waiting to be sent; a failed one carries the destination's reason."""

    key: str | None  # None for a row rejected at ingest for want of a key
    operation: Literal["upsert", "delete"]
    error: str | None
    attempts: int
    last_attempt_at: datetime | None
    #: The event row as it arrived, for rows rejected at ingest.
    row: dict[str, Any] | None = None


class DestinationCheck(Body):
    ok: bool
    error: str | None
