"""Turns a projected source row into the destination fields a sync's mappings describe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liquid import Environment

from service.core.models import StandardMapping, StaticMapping, SyncConfiguration

RowMapper = Callable[[dict[str, Any]], dict[str, Any]]

_LIQUID = Environment()


class MappingError(ValueError):
    """A mapping failed for one row (a template error); that row is rejected, not the run."""


def compile_mappings(configuration: SyncConfiguration) -> RowMapper:
    standard: list[tuple[str, str]] = []
    static: dict[str, Any] = {}
    templates = []
    for mapping in configuration.mappings:
        if isinstance(mapping, StandardMapping):
            standard.append((mapping.from_, mapping.to))
        elif isinstance(mapping, StaticMapping):
            static[mapping.to] = mapping.value
        else:
            templates.append((mapping.to, _LIQUID.from_string(mapping.template)))

    if not static and not templates and all(src == to for src, to in standard):
        names = [to for _, to in standard]
        name_set = set(names)

        def same_names(row: dict[str, Any]) -> dict[str, Any]:
            """Every column under its own name: the row itself when it has just those."""
            if row.keys() == name_set:
                return row
            return {n: row.get(n) for n in names}

        return same_names

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        out = {to: row.get(src) for src, to in standard}
        if static:
            out.update(static)
        for to, template in templates:
            try:
                out[to] = template.render(row)  # a dict: a column may be called "self"
            except Exception as exc:
                raise MappingError(f"template for {to!r} failed: {exc}") from exc
        return out

    return apply
