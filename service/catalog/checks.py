"""The catalog's rules that need no store: configuration limits, typed configurations, and the
fields a destination's driver would only trip over when it connects."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ValidationError

from service.catalog.errors import Invalid
from service.core.errors import ConfigurationError
from service.core.models import SyncConfiguration
from service.core.specs import SourceConfiguration
from service.destinations.registry import MASK, mask_configuration, validate_configuration


@dataclass(frozen=True, slots=True)
class ConfigurationLimits:
    """Bounds on what one configuration may hold, checked when it is written: a configuration
    nested hundreds deep or megabytes long costs every later reader of the catalog."""

    max_depth: int = 32
    max_bytes: int = 64 * 1024


def validation_details(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """Pydantic's errors as {dotted field: reason}; the reasons never quote the input."""
    details: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
        field = ".".join([prefix, *loc] if prefix else loc) or prefix or "body"
        details.setdefault(field, error["msg"])
    return details


def _too_deep(value: Any, limit: int) -> bool:
    """Iterative, so that the depth being checked cannot exhaust the stack checking it."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def check_limits(field: str, value: Any, limits: ConfigurationLimits) -> None:
    if _too_deep(value, limits.max_depth):
        raise Invalid({field: f"nested deeper than {limits.max_depth} levels"})
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise Invalid({field: "not representable as JSON (object keys must be strings)"}) from None
    if size > limits.max_bytes:
        raise Invalid({field: f"larger than {limits.max_bytes} bytes as JSON"})


# --- sources and syncs ---------------------------------------------------------------------


def source_configuration(configuration: Any) -> dict[str, Any]:
    """The configuration in its one stored form: defaults left out, so `{"topic": t}` and
    `{"topic": t, "format": "sync"}` are the same source."""
    try:
        parsed = SourceConfiguration.model_validate(configuration)
    except ValidationError as exc:
        raise Invalid(validation_details(exc, "configuration")) from None
    return parsed.model_dump(exclude_defaults=True)


def sync_configuration(configuration: Any) -> SyncConfiguration:
    """Mode and mappings; every Liquid template is parsed here, so a template that cannot
    render is refused when written, not row by row later."""
    try:
        return SyncConfiguration.model_validate(configuration)
    except ValidationError as exc:
        raise Invalid(validation_details(exc, "configuration")) from None


# --- destinations --------------------------------------------------------------------------


def destination_configuration(type_name: str, configuration: dict[str, Any]) -> BaseModel:
    """The typed configuration, or Invalid naming the field (`type`, `configuration.url`)."""
    try:
        typed = validate_configuration(type_name, configuration)
    except ValidationError as exc:
        raise Invalid(validation_details(exc, "configuration")) from None
    except ConfigurationError as exc:
        raise Invalid({"type": str(exc)}) from None
    # Header lines and broker lists are checked by the configuration models themselves, which
    # the destinations also use when they open; a DSN is parsed only by the driver, so here.
    if type_name == "postgres" and (problem := _dsn_problem(str(configuration.get("dsn", "")))):
        raise Invalid({"configuration.dsn": problem})
    return typed


def _dsn_problem(dsn: str) -> str | None:
    """A DSN the driver would fail to parse; the reason never quotes it (it holds a password)."""
    try:
        netloc = urlsplit(dsn).netloc.rpartition("@")[2]
    except ValueError:  # an unclosed [IPv6 address
        return "not a URL the driver can read"
    for entry in netloc.split(","):  # libpq takes several hosts: h1:5432,h2:5433
        host = entry.partition("]")[2] if entry.startswith("[") else entry  # [IPv6]:port
        _, sep, port = host.rpartition(":")
        if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
            return "the port is a number from 1 to 65535"
    return None


async def ca_file_problem(path: str) -> str | None:
    """Whether the file loads as CA certificates (read off the event loop)."""

    def load() -> None:
        ssl.create_default_context(cafile=path)

    try:
        await asyncio.to_thread(load)
    except FileNotFoundError:
        return "no such file"
    except (OSError, ssl.SSLError, ValueError):
        return "not a readable file of PEM CA certificates"
    return None


# --- secrets -------------------------------------------------------------------------------


def secret_values(type_name: str, configuration: dict[str, Any]) -> list[str]:
    """Every value the API masks in this configuration (and a DSN's password)."""
    shown = mask_configuration(type_name, configuration)
    found: list[str] = []
    for key, value in configuration.items():
        if shown.get(key) == value:
            continue
        if isinstance(value, dict):
            found.extend(str(v) for v in value.values())
        elif key == "dsn" and isinstance(value, str):
            found.extend(p for p in (_password(value), value) if p)
        elif value is not None:
            found.append(str(value))
    return [s for s in found if s and s != MASK]


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
