"""The declarative resources file (SYNC_CONFIG_FILE): loaded at start, upserted by id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.core.errors import ConfigurationError
from service.core.models import (
    ApiModel,
    Destination,
    Model,
    NumericId,
    Source,
    Sync,
    SyncConfiguration,
    referenced_columns,
    utcnow,
)
from service.core.specs import DestinationCreate, ModelCreate, SourceCreate, SyncCreate
from service.destinations.registry import validate_configuration
from service.store.base import CatalogItem, Conflict, Store

MAX_FILE_BYTES = 10 << 20


_STRICT = ConfigDict(extra="forbid")  # a typo in a file is an error, not ignored


class SourceSpec(SourceCreate):
    model_config = _STRICT
    id: NumericId


class ModelSpec(ModelCreate):
    model_config = _STRICT
    id: NumericId


class DestinationSpec(DestinationCreate):
    model_config = _STRICT
    id: NumericId


class SyncSpec(SyncCreate):
    model_config = _STRICT
    id: NumericId


class ResourcesFile(ApiModel):
    workspace_id: NumericId = "1"
    sources: list[SourceSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)
    destinations: list[DestinationSpec] = Field(default_factory=list)
    syncs: list[SyncSpec] = Field(default_factory=list)


class ResourcesError(Exception):
    """The file and the field at fault, on one line."""


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    error = exc.errors()[0]
    where = _where(tuple(error["loc"]))
    return f"{prefix}{'.' if prefix and where else ''}{where}: {error['msg']}"


def parse_resources(path: Path) -> ResourcesFile:
    """Read and validate the file; raises ResourcesError naming the file and the field."""
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ResourcesError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw_bytes) > MAX_FILE_BYTES:
        raise ResourcesError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        if path.suffix.lower() == ".json":
            raw = orjson.loads(raw_bytes)
        else:
            raw = yaml.safe_load(raw_bytes)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        detail = " ".join(str(exc).split())  # one line, even for YAML's pointer to the column
        raise ResourcesError(f"{path}: not valid {kind}: {detail}") from None
    if raw is None:
        raw = {}
    try:
        resources = ResourcesFile.model_validate(raw)
    except ValidationError as exc:
        raise ResourcesError(f"{path}: {_first_error(exc)}") from None
    _check(path, resources)
    return resources


def _check(path: Path, resources: ResourcesFile) -> None:
    for kind in ("sources", "models", "destinations", "syncs"):
        ids: set[str] = set()
        slugs: set[str] = set()
        for i, item in enumerate(getattr(resources, kind)):
            if item.id in ids:
                raise ResourcesError(f"{path}: {kind}[{i}].id: id {item.id!r} is used twice")
            if item.slug in slugs:
                raise ResourcesError(f"{path}: {kind}[{i}].slug: slug {item.slug!r} is used twice")
            ids.add(item.id)
            slugs.add(item.slug)
    for i, source in enumerate(resources.sources):
        if source.type != "kafka":
            raise ResourcesError(f"{path}: sources[{i}].type: only 'kafka' sources exist")
        topic = source.configuration.get("topic")
        if not isinstance(topic, str) or not topic:
            raise ResourcesError(
                f"{path}: sources[{i}].configuration.topic: a topic name is required"
            )
    for i, destination in enumerate(resources.destinations):
        where = f"destinations[{i}].configuration"
        try:
            validate_configuration(destination.type, destination.configuration)
        except ValidationError as exc:
            raise ResourcesError(f"{path}: {_first_error(exc, where)}") from None
        except ConfigurationError as exc:
            raise ResourcesError(f"{path}: destinations[{i}].type: {exc}") from None
    for i, sync in enumerate(resources.syncs):
        try:
            SyncConfiguration.model_validate(sync.configuration)
        except ValidationError as exc:
            raise ResourcesError(
                f"{path}: {_first_error(exc, f'syncs[{i}].configuration')}"
            ) from None


async def apply_resources(store: Store, resources: ResourcesFile, path: Path) -> None:
    """Upsert every resource by id. References may point at resources already in the store."""
    ws = resources.workspace_id
    models = {m.id: m for m in await store.list_models()}
    destinations = {d.id: d for d in await store.list_destinations()}
    destination_ids = set(destinations) | {d.id for d in resources.destinations}
    sources = {s.id: s for s in await store.list_sources()}
    syncs = {s.id: s for s in await store.list_syncs()}

    for i, spec in enumerate(resources.sources):
        await _upsert(store, Source, sources.get(spec.id), spec, ws, f"{path}: sources[{i}]")
    for i, spec in enumerate(resources.models):
        if (
            spec.source_id
            and spec.source_id not in sources
            and not any(s.id == spec.source_id for s in resources.sources)
        ):
            raise ResourcesError(f"{path}: models[{i}].sourceId: no source {spec.source_id}")
        where = f"{path}: models[{i}]"
        models[spec.id] = await _upsert(store, Model, models.get(spec.id), spec, ws, where)
    for i, spec in enumerate(resources.destinations):
        where = f"{path}: destinations[{i}]"
        await _upsert(store, Destination, destinations.get(spec.id), spec, ws, where)
    for i, spec in enumerate(resources.syncs):
        model = models.get(spec.model_id)
        if model is None:
            raise ResourcesError(f"{path}: syncs[{i}].modelId: no model {spec.model_id}")
        if spec.destination_id not in destination_ids:
            raise ResourcesError(
                f"{path}: syncs[{i}].destinationId: no destination {spec.destination_id}"
            )
        config = SyncConfiguration.model_validate(spec.configuration)
        derived = {
            "primary_key": model.primary_key,
            "referenced_columns": referenced_columns(model.primary_key, config),
        }
        await _upsert(store, Sync, syncs.get(spec.id), spec, ws, f"{path}: syncs[{i}]", derived)


async def _upsert(
    store: Store,
    cls: type[CatalogItem],
    existing: BaseModel | None,
    spec: BaseModel,
    workspace_id: str,
    where: str,
    derived: dict[str, Any] | None = None,
) -> Any:
    fields = {**spec.model_dump(), **(derived or {}), "workspace_id": workspace_id}
    if existing is not None:
        current = existing.model_dump()
        if all(current.get(k) == v for k, v in fields.items()):
            return existing  # unchanged: keep updatedAt as it was
        fields["created_at"] = current["created_at"]
        fields["updated_at"] = utcnow()
    obj = cls.model_validate(fields)
    try:
        await store.upsert(obj)
    except Conflict as exc:
        raise ResourcesError(f"{where}.{exc.field}: {exc}") from None
    return obj
