"""Destination types by name: how to validate a configuration and open a writer for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from service.core.errors import ConfigurationError
from service.core.interfaces import DestinationWriter
from service.core.models import Destination
from service.destinations.blackhole import BlackholeConfig, BlackholeDestination
from service.destinations.kafka import KafkaDestination, KafkaDestinationConfig
from service.destinations.postgres import PostgresDestination, PostgresDestinationConfig
from service.destinations.webhook import WebhookConfig, WebhookDestination
from service.store.pgconnect import mask_url


@dataclass(frozen=True, slots=True)
class DestinationContext:
    """What a destination may take from the service's own settings."""

    kafka_bootstrap_servers: str


@dataclass(frozen=True, slots=True)
class DestinationType:
    config_model: type[BaseModel]
    factory: Callable[[Any, DestinationContext], DestinationWriter]
    #: Configuration keys whose values are secrets: masked in API responses and logs.
    secret_fields: frozenset[str] = frozenset()


DESTINATION_TYPES: dict[str, DestinationType] = {
    "webhook": DestinationType(
        WebhookConfig, lambda config, _: WebhookDestination(config), frozenset({"secret"})
    ),
    "postgres": DestinationType(
        PostgresDestinationConfig, lambda config, _: PostgresDestination(config), frozenset()
    ),
    "blackhole": DestinationType(
        BlackholeConfig, lambda config, _: BlackholeDestination(config), frozenset()
    ),
    "kafka": DestinationType(
        KafkaDestinationConfig,
        lambda config, context: KafkaDestination(config, context.kafka_bootstrap_servers),
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
