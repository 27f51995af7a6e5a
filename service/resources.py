"""The declarative resources file (SYNC_CONFIG_FILE): loaded at start, upserted by id."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ConfigDict, Field, ValidationError

from service.catalog import Catalog, CatalogError
from service.catalog.checks import (
    ConfigurationLimits,
    check_limits,
    destination_configuration,
    source_configuration,
    sync_configuration,
)
from service.core.models import ApiModel, Destination, Model, NumericId, Source, Sync
from service.core.specs import DestinationCreate, ModelCreate, SourceCreate, SyncCreate
from service.store.base import Store

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


def _field(key: str) -> str:
    """The catalog's `configuration.mappings.2.template` as `configuration.mappings[2].template`."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)


def _error(path: Path, where: str, exc: CatalogError) -> ResourcesError:
    field, reason = next(iter(exc.details.items()))
    return ResourcesError(f"{path}: {where}.{_field(field)}: {reason}")


def _check(path: Path, resources: ResourcesFile) -> None:
    """What can be told without the store, so that a bad file stops the service at once."""
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
    limits = ConfigurationLimits()  # the catalog's defaults; applying checks its own again
    try:
        for i, source in enumerate(resources.sources):
            where = f"sources[{i}]"
            source_configuration(source.configuration.model_dump())
        for i, model in enumerate(resources.models):
            where = f"models[{i}]"
            check_limits("tags", model.tags, limits)
        for i, destination in enumerate(resources.destinations):
            where = f"destinations[{i}]"
            check_limits("configuration", destination.configuration, limits)
            destination_configuration(destination.type, destination.configuration)
        for i, sync in enumerate(resources.syncs):
            where = f"syncs[{i}]"
            check_limits("configuration", sync.configuration, limits)
            sync_configuration(sync.configuration)
    except CatalogError as exc:
        raise _error(path, where, exc) from None


_KINDS: tuple[tuple[str, type[Any]], ...] = (
    ("sources", Source),
    ("models", Model),
    ("destinations", Destination),
    ("syncs", Sync),
)


async def apply_resources(catalog: Catalog | Store, resources: ResourcesFile, path: Path) -> None:
    """Upsert every resource by id, in the order sources, models, destinations, syncs, through
    the catalog service: the same rules, defaults and errors as the same calls to the API.
    References may point at resources already in the store."""
    if not isinstance(catalog, Catalog):  # a bare store: the catalog's rules without settings
        catalog = Catalog(catalog)
    ws = resources.workspace_id
    for name, kind in _KINDS:
        for i, spec in enumerate(getattr(resources, name)):
            try:
                await catalog.put(kind, ws, spec.id, spec)
            except CatalogError as exc:
                raise _error(path, f"{name}[{i}]", exc) from None
