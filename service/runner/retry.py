"""One retry policy: capped exponential backoff with full jitter, honouring retry_after."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempts count from 1).

        A server's Retry-After wins when it asks for longer than the backoff; it is capped by
        `max_delay` so one bad header cannot stall a run for hours.
        """
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        backoff = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            return min(self.max_delay, max(backoff, retry_after))
        return backoff
