"""S0 to S5 and the peer (P4) for one event shape: the same events, produced up front, read by
the baseline consumer, by the service with each store and destination, by two service
processes in one group, and by Flink SQL."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

from bench import baseline, floor, peer, pgcpu, postgres
from bench.context import Bench, DestinationSpec
from bench.events import generate, produce_all, row_keys
from bench.measure import Window, service_window
from bench.scaleout import run_scaleout

log = logging.getLogger("bench")

#: S5's topic: enough partitions for two processes to share.
SCALE_OUT_PARTITIONS = 4
#: S5's rows at least (the full profile's): the second process joins about 3 s (a heartbeat)
#: after the first, so a smaller run is mostly done by one process before the group is two.
SCALE_OUT_MIN_ROWS = 300_000


async def run_shape(bench: Bench, rows_per_event: int, only: set[str]) -> dict[str, Any]:
    profile = bench.profile
    rows = profile.rows_per_shape
    shape = f"{rows_per_event}r"
    events = generate(rows, rows_per_event)
    first = await bench.topic(f"{shape}-a")
    second = await bench.topic(f"{shape}-b")  # the same events again, for S2
    result: dict[str, Any] = {
        "rows_per_event": rows_per_event,
        "events": len(events),
        "rows": rows,
        "mean_event_bytes": round(sum(map(len, events)) / len(events), 1),
        "produce_seconds": [
            round(await produce_all(first, events), 3),
            round(await produce_all(second, events), 3),
        ],
    }
    spread = None
    spread_rows = max(rows, SCALE_OUT_MIN_ROWS)
    if "S5" in only:  # the same events keyed by row, over several partitions
        spread = await bench.topic(f"{shape}-p", partitions=SCALE_OUT_PARTITIONS)
        if spread_rows > rows:
            events = generate(spread_rows, rows_per_event)
        if bench.profile.scale_out_keys == "row":
            keys = row_keys(len(events), rows_per_event)
        else:  # no key: the producer spreads the records over the partitions itself
            keys = [None] * len(events)
        result["produce_seconds"].append(round(await produce_all(spread, events, keys), 3))
    del events
    log.info("%s: %d rows in %d events on %s and %s", shape, rows, result["events"], first, second)

    async def attempt(name: str, scenario: Callable[[str], Awaitable[dict[str, Any]]]) -> None:
        """Runs one scenario (given its process name); a failure leaves the others to run."""
        if name not in only:
            return
        try:
            result[name] = await scenario(f"{name}-{shape}")
        except Exception as exc:
            log.exception("%s %s failed", name, shape)
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            return
        log.info("%s %s: %s rows/s", name, shape, result[name].get("rows_per_s"))

    s1_store = bench.sqlite_url(f"s1-{shape}")
    await attempt("S0", lambda _: _baseline(bench, first, rows))
    await attempt("F1", lambda n: _floor(bench, n, first, rows, shape))
    if "F1" in result and "error" not in result["F1"]:
        # The same events again into F1's store: every row is held already and unchanged.
        await attempt("F2", lambda n: _floor(bench, n, second, rows, shape))
    await attempt("S1", lambda n: _service(bench, n, first, rows, s1_store, bench.blackhole()))
    if "S1" in result and "error" not in result["S1"]:
        # The same events again into S1's store: every row is synced already and unchanged.
        await attempt(
            "S2",
            lambda n: _service(bench, n, second, rows, s1_store, bench.blackhole(), "unchanged"),
        )
    s3_store = bench.sqlite_url(f"s3-{shape}")
    await attempt("S3", lambda n: _service(bench, n, first, rows, s3_store, bench.webhook()))
    if only & {"S4", "S5"}:
        reason = await asyncio.to_thread(bench.tree.postgres_missing)
        reason = reason or await postgres.reachable()
        if reason is not None:
            for name in only & {"S4", "S5"}:
                result[name] = {"not_available": reason}
        else:
            await attempt("S4", lambda n: _postgres(bench, n, first, rows))
            if spread is not None:
                await attempt("S5", lambda n: run_scaleout(bench, n, spread, spread_rows))
    within = 300 + rows / bench.profile.floor_rows_per_second
    for name, reuse in (("P4", True), ("P4d", False)):
        if name not in only:
            continue
        reason = peer.missing() or await postgres.reachable()
        if reason is not None:
            result[name] = {"not_available": reason}
            continue

        async def flink(n: str, reuse: bool = reuse) -> dict[str, Any]:
            return await peer.run_peer(
                bench.workdir, n, first, rows, object_reuse=reuse, within=within
            )

        await attempt(name, flink)
    return result


async def _baseline(bench: Bench, topic: str, rows: int) -> dict[str, Any]:
    """S0, several times (it is every ratio's denominator): the run with the median rate."""
    windows: list[Window] = []
    for n in range(bench.profile.baseline_repeats):
        group = f"{topic}-S0-{n}"
        windows.append(await baseline.measure(topic, group, rows, bench.profile.fetch_max_records))
    rates = [w.rows_per_second for w in windows]
    median = windows[rates.index(statistics.median_low(rates))]
    return {**median.figures(), "repeats_rows_per_s": [round(r, 1) for r in rates]}


async def _floor(bench: Bench, name: str, topic: str, rows: int, shape: str) -> dict[str, Any]:
    """F1 and F2: the bare consumer doing S1's and S2's essential work (bench/floor.py), F2 on
    the store F1 filled."""
    path = bench.workdir / f"floor-{shape}.db"
    window = await baseline.measure(
        topic,
        f"{topic}-{name}",
        rows,
        bench.profile.fetch_max_records,
        str(path),
        module=floor.__name__,
    )
    return window.figures()


async def _service(
    bench: Bench,
    name: str,
    topic: str,
    rows: int,
    database_url: str,
    destination: DestinationSpec,
    completion: str = "delivered",
    meter: pgcpu.PgCpu | None = None,
) -> dict[str, Any]:
    """One service process on `topic` until `rows` are done; with `meter`, PostgreSQL's CPU in
    the window too."""
    if completion == "delivered":
        metric = "sync_rows_delivered_total"
        labels = {"destination_type": destination.type, "outcome": "delivered"}
    else:
        metric, labels = "sync_rows_unchanged_total", {}
    timeout = 60 + rows / bench.profile.floor_rows_per_second
    async with bench.service(
        name, topic=topic, database_url=database_url, destination=destination
    ) as service:

        async def on_ready() -> None:
            await bench.profiler.attach(service.pid, name)
            if meter is not None:
                await meter.start()

        try:
            window = await service_window(service, rows, metric, labels, timeout, on_ready)
        finally:
            spent = await meter.stop() if meter is not None else None
        window.details["completion"] = f"{metric}{labels or ''}"
        if spent is not None:
            window.details["postgres_cpu_s"] = spent
            window.details["postgres_cpu_us_per_row"] = pgcpu.per_row(spent, rows)
    return window.figures()


async def _postgres(bench: Bench, name: str, topic: str, rows: int) -> dict[str, Any]:
    """A fresh schema holds the service's tables and the destination table; PostgreSQL's CPU
    is measured by role (`bench/pgcpu.py`)."""
    async with postgres.Schema() as url:
        return await _service(
            bench, name, topic, rows, url, bench.postgres(url), meter=pgcpu.PgCpu()
        )
