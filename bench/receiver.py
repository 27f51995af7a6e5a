"""The webhook receiver: a small aiohttp server in a process of its own
(`python -m bench.receiver`), so its CPU is not the service's, though both share the machine.

POST /hook answers 200 `{}`; with latency recording on it notes, per row, arrival time minus
the row's `updated_at` (set to the event's `emittedAt` at produce time). While stalled it
holds each request until it recovers. POST /control and GET /stats steer and read it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench.settings import ROOT

#: The longest a stalled request is held before it is answered anyway.
STALL_LIMIT = 600.0


class Hook:
    def __init__(self) -> None:
        self.requests = 0
        self.held = 0
        self.rows = 0
        self.latencies: list[float] = []
        self.record_latency = False
        self.recovered = asyncio.Event()
        self.recovered.set()

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        if not self.recovered.is_set():
            # Held: the sender has usually given up by the time this answers, so these rows
            # are not counted; they come again.
            self.held += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.recovered.wait(), STALL_LIMIT)
            return web.Response(body=b"{}", content_type="application/json")
        rows = orjson.loads(body)["rows"]
        self.requests += 1
        self.rows += len(rows)
        if self.record_latency:
            parse = datetime.fromisoformat
            self.latencies.extend(
                arrived - parse(r["data"]["updated_at"]).timestamp() for r in rows
            )
        return web.Response(body=b"{}", content_type="application/json")

    async def control(self, request: web.Request) -> web.Response:
        order = await request.json()
        if "stall" in order:
            if order["stall"]:
                self.recovered.clear()
            else:
                self.recovered.set()
        if "latency" in order:
            self.record_latency = bool(order["latency"])
        if order.get("reset"):
            self.requests = self.held = self.rows = 0
            self.latencies = []
        return web.json_response({})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "held": self.held,
                "rows": self.rows,
                "latency_ms": summary(self.latencies),
            }
        )


def summary(seconds: list[float]) -> dict[str, float | int | None]:
    """p50, p99 and max in milliseconds (nearest rank)."""
    if not seconds:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(seconds)

    def rank(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"count": len(ordered), "p50": rank(0.5), "p99": rank(0.99), "max": rank(1.0)}


async def serve(port: int) -> None:
    hook = Hook()
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/hook", hook.hook)
    app.router.add_post("/control", hook.control)
    app.router.add_get("/stats", hook.stats)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(bound, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    hook.recovered.set()
    await runner.cleanup()


class ReceiverProcess:
    """The parent's handle on a receiver process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def __aenter__(self) -> ReceiverProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.receiver", cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        self.port = int(line)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def control(self, **order: bool) -> None:
        assert self._http is not None
        base = self.url.removesuffix("/hook")
        async with self._http.post(f"{base}/control", json=order) as response:
            response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        assert self._http is not None
        base = self.url.removesuffix("/hook")
        async with self._http.get(f"{base}/stats") as response:
            return await response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
