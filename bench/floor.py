"""F1 and F2: the floors under S1 and S2. A bare consumer group member doing only the per-row
work that any implementation of their job must do, in the service's own way and on its own
SQLite schema, and nothing else: no routing, no mapping, no in-memory queue, no runs, no
metrics, no status. Runs as a process of its own, like S0: `python -m bench.floor TOPIC GROUP
ROWS MAX_RECORDS DB`.

Before it joins the group (not timed), it reads every key the store holds, with its synced
hash, into a dict: as the only writer of the file, it then knows what the destination holds
without reading the store again. For each fetch (up to MAX_RECORDS events):

- decode each event with orjson and read its emittedAt (`datetime.fromisoformat`);
- take each row's key, encode the row with orjson and hash it (blake2b, ROW_HASH_BYTES), the
  last version of a key winning within the fetch;
- keep the rows whose hash differs from the dict's, and record them as delivered in SQLite's
  own thread, in one transaction (SQLITE_DELIVERED, the statement the service's streamed path
  runs, with the store's pragmas: WAL, synchronous=FULL);
- commit the fetch's offsets once that transaction is durable.

The next fetch is decoded while SQLite writes the last one, as the service overlaps them. F1
runs on a new store (every row changed), F2 on the same events again (every row unchanged).
The service does all this and more, so each floor's rate is a ceiling on its scenario's that no
tuning of the service's own bookkeeping can pass; S1 / F1 and S2 / F2 say how much of it the
service keeps."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import sys
import time
from datetime import datetime
from hashlib import blake2b
from typing import Any

import orjson
from aiokafka import TopicPartition

from bench.baseline import child, subscribed
from service.cli import GC_THRESHOLDS, SWITCH_INTERVAL
from service.core.rows import ROW_HASH_BYTES
from service.store.dialect import WRITER_CACHE_KIB
from service.store.schema import SQLITE, migrations
from service.store.sql.streamed import SQLITE_DELIVERED

SYNC_ID = "floor"
SYNCED = "SELECT key, synced_hash FROM row_state WHERE sync_id = ? AND synced_hash IS NOT NULL"


class Outcomes:
    """The store's SQLite file, written from one thread of its own."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA page_size=16384")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'row_state'").fetchone():
            for script in migrations(SQLITE):
                for statement in script:
                    self.db.execute(statement)
        self.seq = self.db.execute("SELECT coalesce(max(seq), 0) FROM row_state").fetchone()[0]

    def synced(self) -> dict[str, bytes]:
        """Every key the store holds for the sync, with its synced hash."""
        return dict(self.db.execute(SYNCED, (SYNC_ID,)).fetchall())

    def write(self, rows: list[tuple[str, bytes, bytes, float | None]]) -> None:
        """Records the rows as delivered, in one transaction."""
        batch = []
        at = 1
        for key, data, _, emitted in rows:
            batch.append((key, at, len(data), emitted))
            at += len(data)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                SQLITE_DELIVERED,
                (
                    SYNC_ID,
                    self.seq,
                    orjson.dumps(batch),
                    b"".join([r[1] for r in rows]),
                    b"".join([r[2] for r in rows]),
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.seq += len(rows)


async def consume(
    topic: str, group: str, rows: int, max_records: int, path: str
) -> dict[str, float]:
    """Wall-clock timestamps of start, join, first fetch and last commit, and CPU seconds."""
    started = time.time()
    gc.set_threshold(*GC_THRESHOLDS)  # the service's settings
    sys.setswitchinterval(SWITCH_INTERVAL)
    outcomes = Outcomes(path)
    synced = outcomes.synced()  # before the join: not timed
    consumer, joined = subscribed(topic, group)
    await consumer.start()
    loop = asyncio.get_running_loop()
    first: float | None = None
    done_rows = taken = 0
    loads, dumps, fromiso = orjson.loads, orjson.dumps, datetime.fromisoformat
    #: The fetch SQLite is writing: its write (None: nothing changed), its changed rows, its
    #: offsets, its rows.
    writing: tuple[asyncio.Future[None] | None, list[Any], dict[TopicPartition, int], int] | None
    writing = None
    committing: asyncio.Future[None] | None = None
    durable: dict[TopicPartition, int] = {}

    async def settle() -> None:
        nonlocal done_rows, writing, committing
        assert writing is not None
        write, changed, offsets, count = writing
        writing = None
        if write is not None:
            await write
            synced.update((key, digest) for key, _, digest, _ in changed)
        # The fetch is durable: its offsets may go, while the next fetch is decoded; with a
        # commit still on its way, they go with the next one.
        durable.update(offsets)
        if committing is None or committing.done():
            if committing is not None:
                committing.result()
            committing = asyncio.ensure_future(consumer.commit(dict(durable)))
        done_rows += count

    try:
        while done_rows < rows:
            batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
            if not batch:
                if writing is not None:
                    await settle()
                continue
            if first is None:
                first = time.time()
            latest: dict[str, tuple[str, bytes, bytes, float | None]] = {}
            seen = 0
            for messages in batch.values():
                for message in messages:
                    doc = loads(message.value)
                    emitted_at = doc.get("emittedAt")
                    emitted = fromiso(emitted_at).timestamp() if emitted_at else None
                    for row in doc["rows"]:
                        data = dumps(row)
                        key = str(row["id"])
                        digest = blake2b(data, digest_size=ROW_HASH_BYTES).digest()
                        latest[key] = (key, data, digest, emitted)
                    seen += len(doc["rows"])
            changed = [r for r in latest.values() if synced.get(r[0]) != r[2]]
            offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items()}
            if writing is not None:
                await settle()
            write = loop.run_in_executor(None, outcomes.write, changed) if changed else None
            writing = (write, changed, offsets, seen)
            taken += seen
            if taken >= rows:
                await settle()
        done = time.time()
        cpu = time.process_time() - joined.cpu
        if committing is not None:
            await committing
        await consumer.commit(durable)
    finally:
        await consumer.stop()
        outcomes.db.close()
    assert joined.at is not None and first is not None
    return {"started": started, "joined": joined.at, "first": first, "done": done, "cpu": cpu}


def main() -> None:
    child(__doc__ or "", consume, "db")


if __name__ == "__main__":
    main()
