"""Groups row changes into destination batches by size and age; the clock is passed in."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    """`add` rows, ask `is_ready`, `drain` one batch of at most `max_rows`.

    Ready when a full batch is waiting, or when the oldest waiting row is older than `max_age`
    seconds. `drain(force=True)` empties what is left at the end of a run.
    """

    def __init__(self, max_rows: int, max_age: float, clock: Callable[[], float]) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self._max_rows = max_rows
        self._max_age = max_age
        self._clock = clock
        self._items: list[T] = []
        #: [arrival time, rows still waiting] per `add`, oldest first.
        self._arrivals: deque[list[float]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Iterable[T]) -> None:
        before = len(self._items)
        self._items.extend(items)
        if len(self._items) > before:
            self._arrivals.append([self._clock(), len(self._items) - before])

    def is_ready(self) -> bool:
        if len(self._items) >= self._max_rows:
            return True
        return bool(self._arrivals) and self._clock() - self._arrivals[0][0] >= self._max_age

    def drain(self, *, force: bool = False) -> list[T]:
        """One batch if ready (or anything waiting, with `force`); else an empty list."""
        if not (force or self.is_ready()) or not self._items:
            return []
        batch = self._items[: self._max_rows]
        del self._items[: self._max_rows]
        taken = len(batch)
        while taken:
            oldest = self._arrivals[0]
            used = min(taken, int(oldest[1]))
            oldest[1] -= used
            taken -= used
            if not oldest[1]:
                self._arrivals.popleft()
        return batch
