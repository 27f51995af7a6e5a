"""The catalog's domain objects, shaped as Hightouch's API v1 returns them (camelCase JSON)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Literal

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from service.core.templates import TEMPLATE_MAX_CHARS, parse, parse_template


def utcnow() -> datetime:
    return datetime.now(UTC)


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class SyncStatus(StrEnum):
    DISABLED = "disabled"
    PENDING = "pending"
    CANCELLED = "cancelled"
    FAILED = "failed"
    QUEUED = "queued"
    SUCCESS = "success"
    WARNING = "warning"
    QUERYING = "querying"
    PROCESSING = "processing"
    REPORTING = "reporting"
    INTERRUPTED = "interrupted"


class RunStatus(StrEnum):
    CANCELLED = "cancelled"
    FAILED = "failed"
    QUEUED = "queued"
    SUCCESS = "success"
    WARNING = "warning"
    QUERYING = "querying"
    PROCESSING = "processing"
    REPORTING = "reporting"
    INTERRUPTED = "interrupted"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_RUN_STATUSES


_FINAL_RUN_STATUSES = frozenset(
    {
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.SUCCESS,
        RunStatus.WARNING,
        RunStatus.INTERRUPTED,
    }
)

#: The largest id the stores can hold (a signed 64-bit integer).
MAX_ID = (1 << 63) - 1


def _in_id_range(value: str) -> str:
    if int(value) > MAX_ID:
        raise ValueError(f"an id is at most {MAX_ID}")
    return value


NumericId = Annotated[str, Field(pattern=r"^[0-9]+$", max_length=20), AfterValidator(_in_id_range)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=128)]


# --- schedules -----------------------------------------------------------------------------


class Interval(ApiModel):
    quantity: int = Field(gt=0, le=10_000)
    unit: Literal["minute", "hour", "day", "week"]

    @property
    def seconds(self) -> int:
        return self.quantity * {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}[self.unit]


class IntervalSpec(ApiModel):
    interval: Interval


class CronSpec(ApiModel):
    expression: str = Field(min_length=1, max_length=200)

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("a cron expression has five fields: minute hour day month weekday")
        try:
            CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return value


_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class VisualExpression(ApiModel):
    days: dict[Weekday, bool]
    time: str

    @field_validator("time")
    @classmethod
    def _hh_mm(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError("time is HH:MM in UTC, for example 09:30")
        return value


class VisualSpec(ApiModel):
    expressions: list[VisualExpression] = Field(min_length=1)


class IdRef(ApiModel):
    id: str = Field(min_length=1)


class DbtCloudSpec(ApiModel):
    account: IdRef
    job: IdRef
    dbt_credential_id: str | None = None


class ContinuousSpec(ApiModel):
    linger_ms: int = Field(default=200, ge=0, le=600_000)


class IntervalSchedule(ApiModel):
    type: Literal["interval"]
    schedule: IntervalSpec


class CronSchedule(ApiModel):
    type: Literal["cron"]
    schedule: CronSpec


class VisualSchedule(ApiModel):
    type: Literal["visual"]
    schedule: VisualSpec


class DbtCloudSchedule(ApiModel):
    type: Literal["dbt-cloud"]
    schedule: DbtCloudSpec


class ManualSchedule(ApiModel):
    type: Literal["manual"]
    schedule: None = None


class ContinuousSchedule(ApiModel):
    type: Literal["continuous"]
    schedule: ContinuousSpec = Field(default_factory=ContinuousSpec)


SyncSchedule = Annotated[
    IntervalSchedule
    | CronSchedule
    | VisualSchedule
    | DbtCloudSchedule
    | ManualSchedule
    | ContinuousSchedule,
    Field(discriminator="type"),
]


# --- sync configuration --------------------------------------------------------------------


class StandardMapping(ApiModel):
    type: Literal["standard"] = "standard"
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)


class StaticMapping(ApiModel):
    type: Literal["static"]
    to: str = Field(min_length=1)
    value: Any


class TemplateMapping(ApiModel):
    type: Literal["template"]
    to: str = Field(min_length=1)
    template: str = Field(min_length=1, max_length=TEMPLATE_MAX_CHARS)

    @field_validator("template")
    @classmethod
    def _parses(cls, value: str) -> str:
        if (why := parse_template(value)) is not None:
            raise ValueError(f"not a valid Liquid template: {' '.join(why.split())}")
        return value


Mapping = Annotated[StandardMapping | StaticMapping | TemplateMapping, Field(discriminator="type")]

SyncMode = Literal["upsert", "insert", "update", "mirror"]


class SyncConfiguration(ApiModel):
    """Ours (Hightouch leaves it opaque): mode and mappings, plus destination-specific keys."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    mode: SyncMode = "upsert"
    mappings: list[Mapping] = Field(min_length=1, max_length=1000)

    @model_validator(mode="before")
    @classmethod
    def _default_mapping_type(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("mappings"), list):
            data = dict(data)
            data["mappings"] = [
                {"type": "standard", **m} if isinstance(m, dict) and "type" not in m else m
                for m in data["mappings"]
            ]
        return data

    @model_validator(mode="after")
    def _unique_targets(self) -> SyncConfiguration:
        seen: set[str] = set()
        for mapping in self.mappings:
            if mapping.to in seen:
                raise ValueError(f"two mappings write the field {mapping.to!r}")
            seen.add(mapping.to)
        return self


# --- catalog resources ---------------------------------------------------------------------


class CatalogResource(ApiModel):
    """What sources, models and destinations share."""

    id: NumericId
    name: str = Field(min_length=1, max_length=200)
    slug: Slug
    workspace_id: NumericId = "1"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Source(CatalogResource):
    type: Literal["kafka"] = "kafka"
    configuration: dict[str, Any]


class Model(CatalogResource):
    primary_key: str = Field(min_length=1, max_length=200)
    source_id: NumericId | None = None
    #: Hightouch's model fields, kept as sent; a model here is fed by change events.
    is_schema: bool = False
    query_type: str = Field(default="custom", max_length=50)
    tags: dict[str, str] = Field(default_factory=dict)


class Destination(CatalogResource):
    type: str = Field(min_length=1, max_length=50)
    configuration: dict[str, Any]


class Sync(ApiModel):
    """Maps one model to one destination; the fourteen fields of Hightouch's Sync."""

    id: NumericId
    slug: Slug
    workspace_id: NumericId = "1"
    model_id: NumericId
    destination_id: NumericId
    disabled: bool = False
    schedule: SyncSchedule
    configuration: dict[str, Any]
    primary_key: str
    referenced_columns: list[str]
    status: SyncStatus = SyncStatus.PENDING
    last_run_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @cached_property
    def parsed_configuration(self) -> SyncConfiguration:
        return SyncConfiguration.model_validate(self.configuration)


def referenced_columns(primary_key: str, configuration: SyncConfiguration) -> list[str]:
    """The key plus every column a mapping reads, in first-use order."""
    columns = [primary_key]
    for mapping in configuration.mappings:
        if isinstance(mapping, StandardMapping):
            reads = [mapping.from_]
        elif isinstance(mapping, TemplateMapping):
            template = parse(mapping.template)
            reads = [] if isinstance(template, str) else list(template.global_variables())
        else:
            reads = []
        columns.extend(c for c in reads if c not in columns)
    return columns


# --- runs ----------------------------------------------------------------------------------


class RowCounts(ApiModel):
    added_count: int = 0
    changed_count: int = 0
    removed_count: int = 0

    @property
    def total(self) -> int:
        return self.added_count + self.changed_count + self.removed_count

    def add(self, op: str, n: int = 1) -> None:
        setattr(self, f"{op}_count", getattr(self, f"{op}_count") + n)


class SyncRun(ApiModel):
    id: NumericId
    sync_id: NumericId
    status: RunStatus = RunStatus.QUEUED
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    query_size: int = 0
    completion_ratio: float = 0.0
    planned_rows: RowCounts = Field(default_factory=RowCounts)
    successful_rows: RowCounts = Field(default_factory=RowCounts)
    failed_rows: RowCounts = Field(default_factory=RowCounts)
    error: str | None = None
    full_resync: bool = False
