"""What a client sends to create a resource: the API's request bodies, and (with an id) the
entries of the resources file. Camel case on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from service.core.models import NumericId, Slug, SyncSchedule


class Spec(BaseModel):
    """Fields Hightouch clients send that mean nothing here are ignored rather than refused,
    so those clients work unchanged."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class SourceConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")


class SourceCreate(Spec):
    name: str = Field(min_length=1, max_length=200)
    slug: Slug
    type: Literal["kafka"] = "kafka"
    configuration: SourceConfiguration


class ModelCreate(Spec):
    name: str = Field(min_length=1, max_length=200)
    slug: Slug
    primary_key: str = Field(min_length=1, max_length=200)
    source_id: NumericId | None = None
    is_schema: bool = False
    query_type: str = Field(default="custom", max_length=50)
    tags: dict[str, str] = Field(default_factory=dict)


class DestinationCreate(Spec):
    name: str = Field(min_length=1, max_length=200)
    slug: Slug
    type: str = Field(min_length=1, max_length=50)
    configuration: dict[str, Any]


class SyncCreate(Spec):
    slug: Slug
    model_id: NumericId
    destination_id: NumericId
    disabled: bool = False
    schedule: SyncSchedule
    configuration: dict[str, Any]
