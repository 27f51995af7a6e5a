"""Destination errors (`retriable` says whether the framework may send the same batch again),
and how a validation error is shown without quoting its input."""

from __future__ import annotations

from pydantic import ValidationError


class DestinationError(Exception):
    """The batch was not delivered. Its rows stay pending with this message."""

    retriable: bool = False
    #: A fatal error ends the run as `failed`; a non-fatal one fails only this batch's rows.
    fatal: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RetriableError(DestinationError):
    """Worth sending again after a pause (timeouts, 408, 429, 5xx). `retry_after` in seconds."""

    retriable = True


class BatchRejected(DestinationError):
    """The destination refused the whole batch for a reason that retrying will not change."""


class DestinationAuthError(BatchRejected):
    """The destination refused our credentials (401, 403): no later batch can succeed."""

    fatal = True


class DestinationUnavailable(DestinationError):
    """Retries ran out: the destination stayed unreachable."""

    fatal = True


class ConfigurationError(ValueError):
    """A destination or sync configuration that its type cannot use."""


def validation_details(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """Pydantic's errors as {dotted field: reason}; the reasons never quote the input."""
    details: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-")]
        field = ".".join([prefix, *loc] if prefix else loc) or prefix or "body"
        details.setdefault(field, error["msg"])
    return details
