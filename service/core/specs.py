"""What a client sends to create or change a resource: the API's request bodies, and (with an
id) the entries of the resources file. Camel case on the wire. Each field and its constraints
are declared once, on the resource itself (service.core.models); a spec names which of them a
client may send."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from service.core.models import Destination, Model, Source, Sync


class Spec(BaseModel):
    """Fields Hightouch clients send that mean nothing here are ignored rather than refused,
    so those clients work unchanged."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def _optional(info: FieldInfo) -> FieldInfo:
    """The same field and constraints, but left out (None) unless sent."""
    optional = copy.copy(info)
    optional.default = None
    optional.default_factory = None
    # pydantic rebuilds a field from the attributes recorded as set; record the new default.
    attributes = {k: v for k, v in info._attributes_set.items() if k != "default_factory"}
    optional._attributes_set = {**attributes, "default": None}
    return optional


def spec_of(
    name: str,
    resource: type[BaseModel],
    fields: tuple[str, ...],
    *,
    partial: bool = False,
    **overrides: Any,
) -> type[Spec]:
    """A body carrying `fields` of `resource` as the resource declares them; with `partial`,
    each may be left out (a PATCH). `overrides` are (annotation, FieldInfo) pairs."""
    definitions: dict[str, Any] = {}
    for field in fields:
        if field in overrides:
            annotation, info = overrides[field]
        else:
            info = resource.model_fields[field]
            annotation = info.annotation
        if partial:
            definitions[field] = (annotation | None, _optional(info))
        else:
            definitions[field] = (annotation, info)
    return create_model(name, __base__=Spec, __module__=__name__, **definitions)


class SourceConfiguration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    #: How events on the topic are shaped: this service's change events, or Debezium's.
    format: Literal["sync", "debezium"] = "sync"


_SOURCE_CONFIGURATION = (SourceConfiguration, Field())

SourceCreate = spec_of(
    "SourceCreate",
    Source,
    ("name", "slug", "type", "configuration"),
    configuration=_SOURCE_CONFIGURATION,
)
SourcePatch = spec_of(
    "SourcePatch",
    Source,
    ("name", "slug", "configuration"),
    partial=True,
    configuration=_SOURCE_CONFIGURATION,
)

_MODEL_FIELDS = ("name", "slug", "primary_key", "source_id", "is_schema", "query_type", "tags")
ModelCreate = spec_of("ModelCreate", Model, _MODEL_FIELDS)
ModelPatch = spec_of("ModelPatch", Model, _MODEL_FIELDS, partial=True)

DestinationCreate = spec_of(
    "DestinationCreate", Destination, ("name", "slug", "type", "configuration")
)
DestinationPatch = spec_of(
    "DestinationPatch", Destination, ("name", "slug", "configuration"), partial=True
)

SyncCreate = spec_of(
    "SyncCreate",
    Sync,
    ("slug", "model_id", "destination_id", "disabled", "schedule", "configuration"),
)
SyncPatch = spec_of(
    "SyncPatch", Sync, ("slug", "disabled", "schedule", "configuration"), partial=True
)
