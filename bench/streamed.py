"""The streamed path alone: `python -m bench.streamed`.

The bench's events, decoded and projected up front, go through `Streams.take` of a continuous
sync to the `blackhole` destination, and each group of batches sent is recorded in a SQLite
store in a temporary directory: the queue, the plan, the sends and the outcome writes, with
no broker and no decoding. Reported: rows/s (wall clock, from the first `take` to the last
batch recorded) and CPU per row of the process (both threads: the event loop's and SQLite's),
the median of the repeats. Every row is a new key, as in S1. Not part of a run: it isolates
what S1 pays per row after decoding and projection, so a change to the stream or the store
shows in it without the broker's noise."""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from bench.events import generate
from service.cli import GC_THRESHOLDS, SWITCH_INTERVAL
from service.core.interfaces import SystemClock
from service.core.metrics import Metrics
from service.core.models import Destination, Model, Sync, SyncConfiguration, referenced_columns
from service.core.rows import PendingWrite
from service.destinations.registry import DestinationContext, open_destination
from service.ingest import Ingest
from service.router import build_routes
from service.runner.runner import SyncRunner
from service.runner.stream import Streams
from service.source.decode import decode_event
from service.store.sqlite import SqliteStore

#: Events a fetch hands over at once, as the service's consumer does (up to 2,000 records,
#: or about 1 MiB: 36 events of 100 rows).
FETCH_EVENTS = {1: 2000, 100: 36}


class _Reporter:
    async def report(self, sync: Sync, run: Any) -> None:
        return None


def _fetches(
    ingest: Ingest, rows: int, rows_per_event: int, sync: Sync
) -> list[list[PendingWrite]]:
    """The rows of each fetch, as ingest prepares them."""
    values = generate(rows, rows_per_event)
    per = FETCH_EVENTS.get(rows_per_event, max(1, 2000 // rows_per_event))
    routes = build_routes([sync])
    fetches = []
    for start in range(0, len(values), per):
        events = [decode_event(None, v) for v in values[start : start + per]]
        (part,) = ingest.prepare(events, routes)
        fetches.append(part.writes)
    return fetches


def _sync(columns: list[str]) -> Sync:
    configuration = {"mode": "upsert", "mappings": [{"from": c, "to": c} for c in columns]}
    parsed = SyncConfiguration.model_validate(configuration)
    return Sync(
        id="1",
        slug="bench",
        model_id="1",
        destination_id="1",
        schedule={"type": "continuous", "schedule": {"lingerMs": 0}},
        configuration=configuration,
        primary_key="id",
        referenced_columns=referenced_columns("id", parsed),
    )


async def _once(rows: int, rows_per_event: int) -> dict[str, float]:
    columns = list(orjson.loads(generate(1, 1)[0])["rows"][0])
    sync = _sync(columns)
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(f"sqlite:///{directory}/bench.db")
        await store.open()
        metrics = Metrics()
        fetches = _fetches(Ingest(store, metrics), rows, rows_per_event, sync)
        runner = SyncRunner(
            store,
            lambda d: open_destination(d, DestinationContext("127.0.0.1:9")),
            _Reporter(),
            metrics,
            SystemClock(),
        )
        streams = Streams(store, runner, metrics, SystemClock(), notify_pending=lambda _: None)
        try:
            await store.upsert(Model(id="1", name="bench", slug="bench", primary_key="id"))
            await store.upsert(
                Destination(
                    id="1",
                    name="blackhole",
                    slug="blackhole",
                    type="blackhole",
                    configuration={"batchSize": 500},
                )
            )
            await store.upsert(sync)
            streams.set_syncs([sync])
            gc.collect()
            started, cpu = time.perf_counter(), time.process_time()
            waiting: list[asyncio.Future[None]] = []
            for writes in fetches:
                to_store, ticket = await streams.take(writes, set(), set())
                if to_store or ticket is None:
                    raise RuntimeError(f"{len(to_store)} rows took the store path")
                waiting.append(ticket.done)
                if len(waiting) > 4:  # the committer's queue: a few fetches ahead
                    await waiting.pop(0)
            await asyncio.gather(*waiting)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            await streams.close()
            await runner.close()
            await store.close()
    return {"rows_per_s": rows / wall, "cpu_us_per_row": cpu / rows * 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.streamed", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rows-per-event", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)  # as the service runs
    sys.setswitchinterval(SWITCH_INTERVAL)
    runs = [asyncio.run(_once(args.rows, args.rows_per_event)) for _ in range(args.repeats)]
    result = {
        "rows": args.rows,
        "rows_per_event": args.rows_per_event,
        "runs": runs,
        "median": {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]},
    }
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
