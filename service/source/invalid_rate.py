"""Watches the share of invalid events per partition, so a flood into the DLQ is loud."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Window:
    batches: deque[tuple[int, int]] = field(default_factory=deque)  # (events, invalid)
    events: int = 0
    invalid: int = 0
    alarmed: bool = False


class InvalidRateMonitor:
    """Share of invalid events over about the last `window` events of each partition.

    `observe` returns True when the partition crosses `threshold` (once, until it drops
    below again), so the caller logs one line per incident, not one per batch."""

    def __init__(self, threshold: float, window: int, min_events: int = 50) -> None:
        self._threshold = threshold
        self._window = window
        self._min_events = min_events
        self._partitions: dict[tuple[str, int], _Window] = {}

    def observe(self, topic: str, partition: int, events: int, invalid: int) -> bool:
        w = self._partitions.setdefault((topic, partition), _Window())
        w.batches.append((events, invalid))
        w.events += events
        w.invalid += invalid
        while len(w.batches) > 1 and w.events - w.batches[0][0] >= self._window:
            old_events, old_invalid = w.batches.popleft()
            w.events -= old_events
            w.invalid -= old_invalid
        over = w.events >= self._min_events and self.ratio(topic, partition) > self._threshold
        crossed = over and not w.alarmed
        w.alarmed = over
        return crossed

    def ratio(self, topic: str, partition: int) -> float:
        w = self._partitions.get((topic, partition))
        return w.invalid / w.events if w and w.events else 0.0

    def alarmed(self, topic: str, partition: int) -> bool:
        w = self._partitions.get((topic, partition))
        return bool(w and w.alarmed)
