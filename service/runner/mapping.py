"""Turns a projected source row into the destination fields a sync's mappings describe.

Liquid templates are bounded: source size, block nesting, loop iterations (nested and in
total), output bytes, local variables, context depth and CPU time, so one row's render does a
bounded amount of work; a row whose template exceeds a limit is rejected with the reason.
Mappers that render templates say so (`renders_templates`), so the runner can plan their rows
in a worker thread instead of the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import reduce
from operator import mul
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import LiquidError, LoopIterationLimitError, ResourceLimitError
from liquid.undefined import UNDEFINED

from service.core.models import StandardMapping, StaticMapping, SyncConfiguration

RowMapper = Callable[[dict[str, Any]], dict[str, Any]]

#: Longest template source accepted, in characters.
TEMPLATE_MAX_CHARS = 10_000
#: Loop iterations one render may run, all loops together.
TEMPLATE_MAX_ITERATIONS = 10_000
#: Most output one render may write, and most bytes its variables may hold.
TEMPLATE_MAX_OUTPUT = 64 * 1024
TEMPLATE_MAX_LOCALS = 64 * 1024
#: CPU time one render may take (the thread's own, not time spent waiting for the GIL).
TEMPLATE_MAX_CPU_SECONDS = 0.05
#: Variable lookups and filter calls between two looks at the clock.
_STEPS_PER_CLOCK = 64


class TemplateTimeLimitError(ResourceLimitError):
    """A render used more CPU time than TEMPLATE_MAX_CPU_SECONDS."""


class _BudgetContext(RenderContext):
    """Counts every loop iteration of a render, not only those of one nest of loops (the
    built-in limit lets many loops in a row run the limit each), and the CPU time it takes,
    looked at every few variable lookups and filter calls."""

    __slots__ = ("_deadline", "_iterations", "_steps")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iterations = 0
        self._steps = 0
        self._deadline = time.thread_time() + TEMPLATE_MAX_CPU_SECONDS

    def _step(self) -> None:
        self._steps += 1
        if self._steps % _STEPS_PER_CLOCK == 0 and time.thread_time() > self._deadline:
            raise TemplateTimeLimitError(
                f"more than {TEMPLATE_MAX_CPU_SECONDS * 1000:g} ms of CPU time", token=None
            )

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        self._iterations += reduce(mul, (loop.length for loop in self.loops), length)
        if self._iterations > TEMPLATE_MAX_ITERATIONS:
            raise LoopIterationLimitError(
                f"more than {TEMPLATE_MAX_ITERATIONS} loop iterations", token=None
            )
        self._step()

    def get(self, path: list[object], *, token: Any, default: object = UNDEFINED) -> object:
        self._step()
        return super().get(path, token=token, default=default)

    def filter(self, name: str, token: Any) -> Callable[..., object]:
        self._step()
        return super().filter(name, token)


class _BoundedTemplate(BoundTemplate):
    context_class = _BudgetContext


class _BoundedLiquid(Environment):
    template_class = _BoundedTemplate
    block_nesting_limit = 10
    context_depth_limit = 10
    loop_iteration_limit = TEMPLATE_MAX_ITERATIONS
    output_stream_limit = TEMPLATE_MAX_OUTPUT
    local_namespace_limit = TEMPLATE_MAX_LOCALS


_LIQUID = _BoundedLiquid()


class MappingError(ValueError):
    """A mapping failed for one row (a template error); that row is rejected, not the run."""


def parse_template(source: str) -> str | None:
    """Why a template cannot be used (too long, a syntax error, nested too deep), or None.
    For checking a sync's mappings when it is saved."""
    parsed = _parse(source)
    return parsed if isinstance(parsed, str) else None


def _parse(source: str) -> BoundTemplate | str:
    """The template, or why it cannot be used."""
    if len(source) > TEMPLATE_MAX_CHARS:
        return f"a template of at most {TEMPLATE_MAX_CHARS} characters"
    try:
        return _LIQUID.from_string(source)
    except LiquidError as exc:
        return _describe(exc)
    except (RecursionError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def _describe(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


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
                raise MappingError(f"template for {to!r} failed: {_describe(exc)}") from exc
        return out


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
            templates.append((mapping.to, _parse(mapping.template)))

    if not static and not templates and all(src == to for src, to in standard):
        names = [to for _, to in standard]
        name_set = set(names)

        def same_names(row: dict[str, Any]) -> dict[str, Any]:
            """Every column under its own name: the row itself when it has just those."""
            if row.keys() == name_set:
                return row
            return {n: row.get(n) for n in names}

        return same_names

    if templates:
        return TemplateMapper(standard, static, templates)

    def apply(row: dict[str, Any]) -> dict[str, Any]:
        out = {to: row.get(src) for src, to in standard}
        if static:
            out.update(static)
        return out

    return apply
