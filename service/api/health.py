"""Liveness, readiness and Prometheus metrics: the routes that need no token."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.core.metrics import Metrics


class Readiness:
    """Named checks, filled in as the service's parts start; not ready before the first."""

    def __init__(self) -> None:
        self._checks: dict[str, Callable[[], Awaitable[bool]]] = {}

    def add(self, name: str, check: Callable[[], Awaitable[bool]]) -> None:
        self._checks[name] = check

    async def __call__(self) -> dict[str, bool]:
        if not self._checks:
            return {"started": False}
        return {name: await _within(check) for name, check in self._checks.items()}


async def _within(check: Callable[[], Awaitable[bool]], seconds: float = 2.0) -> bool:
    """A check that fails or hangs counts as not ready: /readyz itself always answers."""
    try:
        return bool(await asyncio.wait_for(check(), seconds))
    except Exception:
        return False


class ExitReason:
    """Why the service stops on its own: the exit status and one line for the operator."""

    def __init__(self) -> None:
        self.code = 1
        self.message = ""

    def set(self, code: int, message: str) -> None:
        self.code, self.message = code, message


READINESS = web.AppKey("readiness", Readiness)
METRICS = web.AppKey("metrics", Metrics)
#: Set when a background part of the service died; the process then stops.
FATAL = web.AppKey("fatal", asyncio.Event)
EXIT_REASON = web.AppKey("exit_reason", ExitReason)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS]()
    ready = all(checks.values())
    return web.json_response(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
