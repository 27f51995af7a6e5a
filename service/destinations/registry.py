"""Destination types by name: how to validate a configuration and open a writer for it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, TypeAdapter, ValidationError

from service.core.errors import ConfigurationError, DestinationError
from service.core.interfaces import DestinationWriter
from service.core.models import Destination
from service.destinations.blackhole import BlackholeConfig, BlackholeDestination
from service.destinations.egress import EgressPolicy
from service.destinations.kafka import KafkaDestination, KafkaDestinationConfig, split_servers
from service.destinations.postgres import (
    PostgresDestination,
    PostgresDestinationConfig,
    dsn_refusals,
)
from service.destinations.webhook import WebhookConfig, WebhookDestination, snippet
from service.store.pgconnect import mask_url


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What a destination may take from the service's own settings. The composition root
    builds one, with the egress policy from SYNC_EGRESS_ALLOW / SYNC_EGRESS_DENY."""

    kafka_bootstrap_servers: str
    #: Where destinations may connect; the default refuses loopback, link-local and the like.
    egress: EgressPolicy = field(default_factory=EgressPolicy)


@dataclass(frozen=True, slots=True)
class DestinationType:
    config_model: type[BaseModel]
    factory: Callable[[Any, DestinationContext], DestinationWriter]
    #: Configuration keys whose values are secrets: masked in API responses and logs.
    secret_fields: frozenset[str] = frozenset()


DESTINATION_TYPES: dict[str, DestinationType] = {
    "webhook": DestinationType(
        WebhookConfig,
        lambda config, context: WebhookDestination(config, context.egress),
        frozenset({"secret"}),
    ),
    "postgres": DestinationType(
        PostgresDestinationConfig,
        lambda config, context: PostgresDestination(config, context.egress),
        frozenset(),
    ),
    "blackhole": DestinationType(
        BlackholeConfig, lambda config, _: BlackholeDestination(config), frozenset()
    ),
    "kafka": DestinationType(
        KafkaDestinationConfig,
        lambda config, context: KafkaDestination(
            config, context.kafka_bootstrap_servers, context.egress
        ),
        frozenset({"saslPassword"}),
    ),
}


def validate_configuration(type_name: str, configuration: dict[str, Any]) -> BaseModel:
    """The typed configuration, or ConfigurationError / ValidationError naming the field."""
    kind = DESTINATION_TYPES.get(type_name)
    if kind is None:
        known = ", ".join(sorted(DESTINATION_TYPES))
        raise ConfigurationError(f"unknown destination type {type_name!r} (known: {known})")
    return kind.config_model.model_validate(configuration)


MASK = "********"


def mask_configuration(type_name: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """The configuration as it may be shown: secret values and every header value masked."""
    kind = DESTINATION_TYPES.get(type_name)
    secret = kind.secret_fields if kind else frozenset()
    shown: dict[str, Any] = {}
    for key, value in configuration.items():
        if key in secret and value is not None:
            shown[key] = MASK
        elif key == "headers" and isinstance(value, dict):
            shown[key] = dict.fromkeys(value, MASK)
        elif key == "dsn" and isinstance(value, str):
            shown[key] = mask_dsn(value)
        else:
            shown[key] = value
    return shown


def mask_dsn(dsn: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:********@host/db"""
    return mask_url(dsn, MASK)


def unmask_configuration(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A configuration sent back with masked values keeps the stored secrets in their place."""
    merged = dict(new)
    for key, value in new.items():
        if value == MASK and key in old:
            merged[key] = old[key]
        elif key == "headers" and isinstance(value, dict) and isinstance(old.get(key), dict):
            merged[key] = {h: old[key].get(h, v) if v == MASK else v for h, v in value.items()}
        elif key == "dsn" and isinstance(value, str) and MASK in value:
            old_dsn = old.get("dsn")
            if isinstance(old_dsn, str) and mask_dsn(old_dsn) == value:
                merged[key] = old_dsn
    return merged


def open_destination(destination: Destination, context: DestinationContext) -> DestinationWriter:
    """A writer for the destination (not yet opened)."""
    try:
        config = validate_configuration(destination.type, destination.configuration)
    except ValidationError as exc:
        raise ConfigurationError(f"destination {destination.id}: {exc}") from exc
    return DESTINATION_TYPES[destination.type].factory(config, context)


def check_destination(
    type_name: str, configuration: dict[str, Any], policy: EgressPolicy
) -> dict[str, str]:
    """What the egress policy refuses in a configuration, by field (`{"url": "why"}`), when
    it can be told without resolving names: literal addresses, local sockets and files. Call
    after `validate_configuration` succeeded; names are checked again on every connection."""
    refused: dict[str, str] = {}
    if type_name == "webhook":
        url = configuration.get("url")
        if isinstance(url, str):
            host = _url_host(url)
            if host is not None and (reason := policy.check_host(host)):
                refused["url"] = reason
    elif type_name == "postgres":
        dsn = configuration.get("dsn")
        if isinstance(dsn, str) and (reasons := dsn_refusals(dsn, policy)):
            refused["dsn"] = "; ".join(dict.fromkeys(reasons))
    elif type_name == "kafka":
        servers = configuration.get("bootstrapServers")
        if isinstance(servers, str):
            try:
                pairs = split_servers(servers)
            except ValueError as exc:
                pairs, refused["bootstrapServers"] = [], str(exc)
            reasons = [r for host, _ in pairs if (r := policy.check_host(host))]
            if reasons:
                refused["bootstrapServers"] = "; ".join(reasons)
        cafile = configuration.get("sslCafile")
        if isinstance(cafile, str) and servers and (reason := policy.check_path(cafile)):
            refused["sslCafile"] = reason
    return refused


def _url_host(url: str) -> str | None:
    """The host of a URL as the HTTP client reads it (after WHATWG normalization)."""
    try:
        parsed = TypeAdapter(AnyHttpUrl).validate_python(url)
    except ValidationError:
        return None
    return parsed.host


async def probe_destination(
    destination: Destination, context: DestinationContext, timeout_seconds: float = 5.0
) -> str | None:
    """Open, check and close a destination within `timeout_seconds`: None when it can take
    rows, else why not (a short message without secrets). Never raises for a destination's
    own failure, so a test request always gets an answer."""
    try:
        writer = open_destination(destination, context)
    except ConfigurationError as exc:
        return snippet(str(exc), 300)
    try:
        async with asyncio.timeout(timeout_seconds):
            await writer.open()
            await writer.check(timeout_seconds)
    except TimeoutError:
        return f"timed out (no answer within {timeout_seconds:g} s)"
    except DestinationError as exc:
        return snippet(str(exc), 300)
    except (OSError, ValueError) as exc:
        return snippet(f"{type(exc).__name__}: {exc}", 300)
    finally:
        await writer.close()
    return None
