"""Why a catalog call refused: the field at fault and the reason, as the API shows them."""

from __future__ import annotations

from typing import ClassVar


class CatalogError(Exception):
    """`details` maps a field (dotted, as the API names it: `configuration.url`) to the reason;
    no reason ever contains a secret value."""

    status: ClassVar[int] = 422

    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in details.items()))
        self.details = details


class Invalid(CatalogError):
    """The resource breaks a rule of its own (a field's type, a limit, a reference)."""


class Conflicting(CatalogError):
    """The resource clashes with another one: a slug or topic taken, still referenced."""

    status = 409


class NotFound(CatalogError):
    """No such resource in the workspace (it may exist in another, which must not show)."""

    status = 404

    def __init__(self, what: str) -> None:
        super().__init__({"id": f"no {what} with that id in this workspace"})
        self.what = what
