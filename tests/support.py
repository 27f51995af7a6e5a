"""Test support: a real aiohttp webhook receiver, and polling without fixed sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from service.core.events import Change, ChangeEvent
from service.destinations.egress import EgressPolicy

#: The egress policy of tests whose endpoints listen on 127.0.0.1 (as SYNC_EGRESS_ALLOW does).
LOCAL_ONLY = EgressPolicy.from_settings(["127.0.0.1/32"])

Reply = tuple[int, dict[str, Any] | None, dict[str, str]]


def change(doc: dict[str, Any]) -> Change:
    """The event the decoder makes of this document, validated as the contract says."""
    return Change.of(ChangeEvent.model_validate(doc))


#: The fourteen fields of Hightouch's Sync, camelCase, as the API returns them.
SYNC_FIELDS = frozenset(
    {
        "configuration",
        "createdAt",
        "destinationId",
        "disabled",
        "id",
        "lastRunAt",
        "modelId",
        "primaryKey",
        "referencedColumns",
        "schedule",
        "slug",
        "status",
        "updatedAt",
        "workspaceId",
    }
)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """`replies` are used in order, then `default`; `rows` lists every row of 2xx requests
    that the reply did not reject."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    default: Reply = (200, {}, {})
    reply_with: Callable[[dict[str, Any]], Reply] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Seconds each request waits before its answer (a slow endpoint).
    delay: float = 0.0
    _runner: web.AppRunner | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> Receiver:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(dict(request.headers), body)
        self.requests.append(received)
        self.changed.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        payload = received.json
        if self.replies:
            status, reply, headers = self.replies.pop(0)
        elif self.reply_with is not None:
            status, reply, headers = self.reply_with(payload)
        else:
            status, reply, headers = self.default
        if 200 <= status < 300:
            refused = {str(r["key"]) for r in (reply or {}).get("rejected", [])}
            self.rows.extend(r for r in payload["rows"] if r["key"] not in refused)
        self.changed.set()
        return web.json_response(reply or {}, status=status, headers=headers)

    def ops(self) -> list[tuple[str, str]]:
        return [(r["op"], r["key"]) for r in self.rows]

    async def wait_rows(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until at least n rows were accepted."""

        async def enough() -> None:
            while len(self.rows) < n:
                self.changed.clear()
                await self.changed.wait()

        try:
            await asyncio.wait_for(enough(), timeout)
        except TimeoutError:
            raise AssertionError(f"expected {n} rows within {timeout}s, got {self.ops()}") from None
        return self.rows


async def wait_for(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll `check` until true; fail with `what` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Listener:
    """A TCP listener that counts the connections it accepts (and answers HTTP 200)."""

    host: str
    port: int = 0
    connections: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    async def start(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    @property
    def netloc(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
