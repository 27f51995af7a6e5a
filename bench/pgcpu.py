"""PostgreSQL's own CPU in a window, by who asked for it: S4's store and destination sessions
next to P4's (the server runs on this machine, so each server process's CPU time is in
/proc/<pid>/stat). A session is named by its application_name in pg_stat_activity: the
service's store ("sync-service store"), its PostgreSQL destination ("sync-service
destination"), Flink's JDBC sink ("PostgreSQL JDBC Driver"); the server's background processes
(WAL writer, checkpointer, autovacuum) and any other session count as "other"."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import asyncpg

from bench.proc import children, cpu_seconds, parent
from bench.settings import PG_URL
from service.destinations import postgres as destination
from service.store import pgconnect as store

#: application_name -> the part of the work it stands for.
ROLES = {
    store.APPLICATION_NAME: "store",
    destination.APPLICATION_NAME: "destination",
    "PostgreSQL JDBC Driver": "peer",
}
#: The roles `PgCpu.stop` reports, in order; "other" is any session without a role above.
ROLE_NAMES = (*ROLES.values(), "other")
#: This meter's own session, left out.
_SELF = "bench pgcpu"


#: How often the server's processes are looked at: a session that ends inside the window
#: (Flink's, as its job finishes) keeps the CPU it had at the last look.
INTERVAL = 0.2


@dataclass(slots=True)
class PgCpu:
    """`await start()` as the window opens, `await stop()` as it closes: CPU seconds of the
    server by role. Reports nothing when the server is not a process of this machine."""

    url: str = PG_URL
    _conn: asyncpg.Connection | None = None
    _postmaster: int | None = None
    _before: dict[int, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _names: dict[int, str] = field(default_factory=dict)
    _watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await asyncpg.connect(
            self.url, server_settings={"application_name": _SELF}, timeout=5
        )
        backend = await self._conn.fetchval("SELECT pg_backend_pid()")
        self._postmaster = parent(backend)
        if self._postmaster is None:
            return  # a server elsewhere: nothing to read
        await self._look()
        self._before = dict(self._last)
        self._watching = asyncio.create_task(self._watch())

    async def _look(self) -> None:
        assert self._postmaster is not None and self._conn is not None
        pids = [self._postmaster, *children(self._postmaster)]
        self._last.update((pid, cpu) for pid in pids if (cpu := cpu_seconds(pid)) is not None)
        for r in await self._conn.fetch("SELECT pid, application_name FROM pg_stat_activity"):
            self._names[r["pid"]] = r["application_name"]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            await self._look()

    async def stop(self) -> dict[str, float] | None:
        """CPU seconds spent in the window by role (store, destination, peer, other) and in
        all ("total"); None when nothing could be read."""
        conn = self._conn
        if conn is None:
            return None
        try:
            if self._postmaster is None:
                return None
            if self._watching is not None:
                self._watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watching
            await self._look()
        finally:
            self._conn = None
            await conn.close()
        spent: dict[str, float] = dict.fromkeys(ROLE_NAMES, 0.0)
        for pid, cpu in self._last.items():
            name = self._names.get(pid, "")
            if name == _SELF:
                continue
            spent[ROLES.get(name, "other")] += cpu - self._before.get(pid, 0.0)
        spent["total"] = sum(spent.values())
        return {role: round(seconds, 3) for role, seconds in spent.items()}


def per_row(spent: dict[str, float] | None, rows: int) -> dict[str, float] | None:
    """The CPU seconds of `stop` as microseconds a row."""
    if not spent or rows <= 0:
        return None
    return {role: round(seconds / rows * 1e6, 2) for role, seconds in spent.items()}
