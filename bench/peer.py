"""P4: the peer a user would pick for S4's job, Flink SQL in a local mini-cluster
(scripts/flink/KafkaToPostgres.java), reading the same topic into the same table in a schema of
its own. Needs a JDK and Maven the first time (the jars are cached under .cache/flink).

The job's Kafka source is bounded at the topic's end, so the job ends when every row is in the
table. The window runs from the first rows seen in the table (polled every 20 ms from the
job's RUNNING state: by then tasks are deployed, generated code compiled, connections open and
the first batch flushed) to the job's end, after the sink's last flush; the rows already in
the table at its start are left out of its count. That favours the peer a little: its start-up
and first batch fall outside the window, where the service's first fetch falls inside its own.
The figure from the job's RUNNING state (which includes task deployment and code generation,
seconds on a busy machine) is kept beside it. CPU is the JVM's (all its threads)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import orjson

from bench import postgres
from bench.measure import Window
from bench.pgcpu import PgCpu, per_row
from bench.proc import cpu_seconds
from bench.settings import KAFKA, PG_URL, ROOT

FLINK = ROOT / "scripts" / "flink" / "flink.sh"


def missing() -> str | None:
    """None when a JVM and the jars (or Maven to fetch them) are there, else why not."""
    if shutil.which("java") is None:
        return "no java on PATH (install a JDK 17)"
    resolved = ROOT / ".cache" / "flink" / "lib" / ".resolved"
    if not resolved.exists() and shutil.which("mvn") is None:
        return "no Flink jars in .cache/flink and no mvn to fetch them"
    return None


async def resolve() -> None:
    proc = await asyncio.create_subprocess_exec(
        str(FLINK), "resolve", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"resolving Flink failed: {out.decode(errors='replace')[-2000:]}")


async def _first_rows(
    table: str, pid: int, found: list[tuple[float, int, float]], meter: PgCpu
) -> None:
    """Polls `table` every 20 ms until it holds rows; notes when, how many, and the JVM's CPU,
    and starts measuring PostgreSQL's."""
    conn = await asyncpg.connect(PG_URL)
    try:
        while True:
            rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
            if rows:
                found.append((time.time(), rows, cpu_seconds(pid) or 0.0))
                await meter.start()
                return
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def run_peer(
    workdir: Path, name: str, topic: str, rows: int, *, object_reuse: bool, within: float
) -> dict[str, Any]:
    """One Flink SQL job from `topic` into a fresh table; its window, checked by a count."""
    await resolve()
    schema = postgres.Schema()
    async with schema:
        await postgres.create_target(schema.name)
        url = urlsplit(PG_URL)
        jdbc = f"jdbc:postgresql://{url.hostname}:{url.port}{url.path}?currentSchema={schema.name}"
        user, password = unquote(url.username or ""), unquote(url.password or "")
        table = postgres.TARGET_TABLE
        args = (KAFKA, topic, jdbc, user, password, table, str(object_reuse).lower(), "1", "500")
        log_path = workdir / f"{name}.log"
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                str(FLINK), "run", *args, stdout=asyncio.subprocess.PIPE, stderr=log
            )
        marks: dict[str, float] = {}
        cpu: dict[str, float] = {}
        first: list[tuple[float, int, float]] = []  # (when, rows then, JVM CPU then)
        watching: asyncio.Task[None] | None = None
        meter = PgCpu()
        spent: dict[str, float] | None = None
        try:
            async with asyncio.timeout(within):
                assert proc.stdout is not None
                async for line in proc.stdout:
                    with contextlib.suppress(ValueError):
                        mark = orjson.loads(line)
                        marks[mark["event"]] = mark["at_ms"] / 1000
                        if mark["event"] == "running":
                            where = f"{schema.name}.{table}"
                            watching = asyncio.create_task(
                                _first_rows(where, proc.pid, first, meter)
                            )
                        if mark["event"] in ("running", "finished"):
                            cpu[mark["event"]] = cpu_seconds(proc.pid) or 0.0
                        if mark["event"] == "finished":
                            spent = await meter.stop()
                code = await proc.wait()
        finally:
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watching
            await meter.stop()  # when the job did not finish
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0 or "finished" not in marks:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Flink job exited {code}:\n{tail}")
        written = await postgres.count_target(schema.name)
    if written != rows:
        raise RuntimeError(f"the Flink job wrote {written} rows of {rows}")
    if not first:
        raise RuntimeError("the first rows in the table were not seen before the job ended")
    opened, before, cpu_then = first[0]
    if before >= rows or opened >= marks["finished"]:
        raise RuntimeError(f"P4: {before} of {rows} rows at the first look: too few rows to time")
    window = Window(
        rows - before,
        spawned=marks["spawned"],
        joined=opened,
        first=opened,
        done=marks["finished"],
        cpu_seconds=cpu["finished"] - cpu_then,
    )
    window.details.update(
        {
            "object_reuse": object_reuse,
            "parallelism": 1,
            "sink_flush_rows": 500,
            "rows_in_table_at_window_start": before,
            "rows_total": rows,
            "rows_per_s_from_spawn": round(rows / (marks["finished"] - marks["spawned"]), 1),
            "rows_per_s_from_job_running": round(rows / (marks["finished"] - marks["running"]), 1),
            "cpu_seconds_from_job_running": round(cpu["finished"] - cpu["running"], 3),
            "submit_to_job_running_s": round(marks["running"] - marks["submitting"], 3),
            "job_running_to_first_rows_s": round(opened - marks["running"], 3),
            "window_start": "first rows seen in the table (polled every 20 ms)",
        }
    )
    if spent is not None:
        window.details["postgres_cpu_s"] = spent
        window.details["postgres_cpu_us_per_row"] = per_row(spent, rows - before)
    return window.figures()
