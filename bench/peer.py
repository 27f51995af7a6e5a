"""P4: the peer a user would pick for S4's job, Flink SQL in a local mini-cluster
(scripts/flink/KafkaToPostgres.java), reading the same topic into the same table in a schema of
its own. Needs a JDK and Maven the first time (the jars are cached under .cache/flink).

The job's Kafka source is bounded at the topic's end, so the job ends when every row is in the
table. The window runs from the moment every task of the job is RUNNING (the mini-cluster's
REST API, polled every 20 ms in the JVM: tasks deployed, generated code compiled, Kafka and
JDBC connections open; the analogue of the service's group join) to the job's end, after the
sink's last flush. CPU is the JVM's (all its threads) over that window."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from bench import postgres
from bench.measure import Window
from bench.settings import KAFKA, PG_URL, ROOT

FLINK = ROOT / "scripts" / "flink" / "flink.sh"
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


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
        try:
            async with asyncio.timeout(within):
                assert proc.stdout is not None
                async for line in proc.stdout:
                    with contextlib.suppress(ValueError):
                        mark = orjson.loads(line)
                        marks[mark["event"]] = mark["at_ms"] / 1000
                        if mark["event"] in ("tasks_running", "finished"):
                            cpu[mark["event"]] = _cpu_seconds(proc.pid)
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if code != 0 or "finished" not in marks:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the Flink job exited {code}:\n{tail}")
        written = await postgres.count_target(schema.name)
    if written != rows:
        raise RuntimeError(f"the Flink job wrote {written} rows of {rows}")
    window = Window(
        rows,
        spawned=marks["spawned"],
        joined=marks["tasks_running"],
        first=marks["tasks_running"],
        done=marks["finished"],
        cpu_seconds=cpu["finished"] - cpu["tasks_running"],
    )
    window.details.update(
        {
            "object_reuse": object_reuse,
            "parallelism": 1,
            "sink_flush_rows": 500,
            "submit_to_job_running_s": round(marks["running"] - marks["submitting"], 3),
            "job_running_to_tasks_running_s": round(marks["tasks_running"] - marks["running"], 3),
            "window_start": "every task RUNNING (REST API, polled every 20 ms in the JVM)",
        }
    )
    return window.figures()
