"""Whether the consumer makes progress: the readiness check reads it."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class ConsumerHealth:
    """Steps that failed and have not succeeded since. While any is listed the consumer is
    stuck (retrying), and the service answers /readyz with 503."""

    def __init__(self) -> None:
        self._failing: dict[str, str] = {}

    def failed(self, step: str, error: BaseException | str) -> None:
        self._failing[step] = str(error)[:300] or type(error).__name__

    def recovered(self, step: str) -> None:
        if self._failing.pop(step, None) is not None:
            log.info("%s works again", step)

    @property
    def stuck(self) -> bool:
        return bool(self._failing)

    @property
    def failing(self) -> dict[str, str]:
        return dict(self._failing)
