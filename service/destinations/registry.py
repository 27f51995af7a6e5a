"""Destination types by name: how to validate a configuration and open a writer for it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from service.core.errors import ConfigurationError
from service.core.interfaces import DestinationWriter
from service.core.models import Destination
from service.destinations.webhook import WebhookConfig, WebhookDestination


@dataclass(frozen=True, slots=True)
class DestinationType:
    config_model: type[BaseModel]
    factory: Callable[[Any], DestinationWriter]
    #: Configuration keys whose values are secrets: masked in API responses and logs.
    secret_fields: frozenset[str] = frozenset()


DESTINATION_TYPES: dict[str, DestinationType] = {
    "webhook": DestinationType(WebhookConfig, WebhookDestination, frozenset({"secret"})),
}


def validate_configuration(type_name: str, configuration: dict[str, Any]) -> BaseModel:
    """The typed configuration, or ConfigurationError / ValidationError naming the field."""
    kind = DESTINATION_TYPES.get(type_name)
    if kind is None:
        known = ", ".join(sorted(DESTINATION_TYPES))
        raise ConfigurationError(f"unknown destination type {type_name!r} (known: {known})")
    return kind.config_model.model_validate(configuration)


def open_destination(destination: Destination) -> DestinationWriter:
    """A writer for the destination (not yet opened)."""
    try:
        config = validate_configuration(destination.type, destination.configuration)
    except ValidationError as exc:
        raise ConfigurationError(f"destination {destination.id}: {exc}") from exc
    return DESTINATION_TYPES[destination.type].factory(config)
