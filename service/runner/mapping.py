"""Turns a projected source row into the destination fields a sync's mappings describe.

Liquid templates are bounded: source size, block nesting, loop iterations (nested and in
total), output bytes, local variables, context depth and CPU time, so one row's render does a
bounded amount of work; a row whose template exceeds a limit is rejected with the reason.
Mappers that render templates say so (`renders_templates`), so the runner can plan their rows
in a worker thread instead of the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liquid import BoundTemplate

from service.core.models import StandardMapping, StaticMapping, SyncConfiguration
from service.core.templates import describe, parse

RowMapper = Callable[[dict[str, Any]], dict[str, Any]]


class MappingError(ValueError):
    """A mapping failed for one row (a template error); that row is rejected, not the run."""


class TemplateMapper:
    """A mapper that renders templates: a row costs up to the templates' limits."""

    def __init__(
        self,
        standard: list[tuple[str, str]],
        static: dict[str, Any],
        templates: list[tuple[str, BoundTemplate | str]],
    ) -> None:
        self._standard = standard
        self._static = static
        self._templates = templates

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {to: row.get(src) for src, to in self._standard}
        if self._static:
            out.update(self._static)
        for to, template in self._templates:
            if isinstance(template, str):  # did not parse: every row says why
                raise MappingError(f"template for {to!r} is invalid: {template}")
            try:
                out[to] = template.render(row)  # a dict: a column may be called "self"
            except Exception as exc:
                raise MappingError(f"template for {to!r} failed: {describe(exc)}") from exc
        return out


def unchanged_over(mapper: RowMapper, columns: tuple[str, ...]) -> bool:
    """True when the mapper gives back every row projected onto `columns` as it is (each
    column under its own name; a projected row has just those keys, and `same_names` returns
    such a row itself): such rows need no mapping."""
    names = getattr(mapper, "names", None)
    return names is not None and set(names) == set(columns)


def renders_templates(mapper: RowMapper) -> bool:
    """True when a mapper renders templates: worth running off the event loop."""
    return isinstance(mapper, TemplateMapper)


def compile_mappings(configuration: SyncConfiguration) -> RowMapper:
    standard: list[tuple[str, str]] = []
    static: dict[str, Any] = {}
    templates: list[tuple[str, BoundTemplate | str]] = []
    for mapping in configuration.mappings:
        if isinstance(mapping, StandardMapping):
            standard.append((mapping.from_, mapping.to))
        elif isinstance(mapping, StaticMapping):
            static[mapping.to] = mapping.value
        else:
            templates.append((mapping.to, parse(mapping.template)))

    if not static and not templates and all(src == to for src, to in standard):
        names = [to for _, to in standard]
        name_set = set(names)

        def same_names(row: dict[str, Any]) -> dict[str, Any]:
            """Every column under its own name: the row itself when it has just those."""
            if row.keys() == name_set:
                return row
            return {n: row.get(n) for n in names}

        same_names.names = tuple(names)  # type: ignore[attr-defined]
        return same_names

    if templates:
        return TemplateMapper(standard, static, templates)

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        out = {to: row.get(src) for src, to in standard}
        if static:
            out.update(static)
        return out

    return apply
