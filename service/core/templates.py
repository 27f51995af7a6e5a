"""The bounded Liquid environment: one parser for a sync's templates, at save time and at render.

Templates are bounded: source size, block nesting, loop iterations (nested and in total),
output bytes, local variables, context depth and CPU time, so one row's render does a bounded
amount of work."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import reduce
from operator import mul
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext
from liquid.exceptions import LiquidError, LoopIterationLimitError, ResourceLimitError
from liquid.undefined import UNDEFINED

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


def parse_template(source: str) -> str | None:
    """Why a template cannot be used (too long, a syntax error, nested too deep), or None.
    For checking a sync's mappings when it is saved."""
    parsed = parse(source)
    return parsed if isinstance(parsed, str) else None


def parse(source: str) -> BoundTemplate | str:
    """The template, or why it cannot be used."""
    if len(source) > TEMPLATE_MAX_CHARS:
        return f"a template of at most {TEMPLATE_MAX_CHARS} characters"
    try:
        return _LIQUID.from_string(source)
    except LiquidError as exc:
        return describe(exc)
    except (RecursionError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]


def describe(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
