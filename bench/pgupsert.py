"""Which asyncpg upsert path writes a batch into PostgreSQL fastest: `python -m bench.pgupsert`.

Three ways to upsert the bench's rows (ten columns, about 285 bytes of JSON) by key, each in
a transaction per batch, into a table of its own in a schema of its own (dropped afterwards):

- `json`: one statement, the batch as one JSON parameter through `json_populate_recordset`;
- `copy`: binary COPY of the rows (as text) into a temporary table, then one
  `INSERT ... SELECT ... ON CONFLICT ... DO UPDATE` from it, casting to the table's types;
- `copy_typed`: the same into a temporary table of the target's own column types, the values
  passed as they are (COPY's best case: it only works when every value already has its
  column's Python type, so a timestamp given as a string would fail);
- `executemany`: a prepared `INSERT ... VALUES ... ON CONFLICT ... DO UPDATE`, one execution
  per row, pipelined by asyncpg.

Each path writes every row as a new key (insert), then the same keys again with changed
values (update). Reported per path and phase: rows/s (wall clock) and the client's CPU per row
(what the service pays); the median of the repeats. The database shares the machine, so only
the ratios between paths in one run mean anything."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
import orjson

from bench.events import COLUMNS, make_row, now_rfc3339
from bench.settings import PG_URL

TYPES = {"id": "bigint", "mrr": "double precision"}  # the others: text, as createTable makes

Writer = Callable[[asyncpg.Connection, list[dict[str, Any]]], Awaitable[None]]


def as_text(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


class Paths:
    def __init__(self, table: str) -> None:
        self.table = table
        cols = ", ".join(COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "id")
        self.conflict = f"ON CONFLICT (id) DO UPDATE SET {updates}"
        self.json_sql = (
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM "
            f"json_populate_recordset(NULL::{table}, $1::json) {self.conflict}"
        )
        stage = "_stage_" + hashlib.sha1(cols.encode()).hexdigest()[:12]
        self.stage = stage
        self.stage_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"({', '.join(f'{c} text' for c in COLUMNS)}) ON COMMIT DELETE ROWS"
        )
        casts = ", ".join(f"{c}::{TYPES.get(c, 'text')}" for c in COLUMNS)
        self.from_stage_sql = (
            f"INSERT INTO {table} ({cols}) SELECT {casts} FROM pg_temp.{stage} {self.conflict}"
        )
        self.typed_stage = stage + "_typed"
        self.typed_stage_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.typed_stage} "
            f"(LIKE {table}) ON COMMIT DELETE ROWS"
        )
        self.from_typed_stage_sql = (
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM pg_temp.{self.typed_stage} "
            f"{self.conflict}"
        )
        params = ", ".join(f"${i}::text::{TYPES.get(c, 'text')}" for i, c in enumerate(COLUMNS, 1))
        self.prepared_sql = f"INSERT INTO {table} ({cols}) VALUES ({params}) {self.conflict}"

    async def json(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
        async with conn.transaction():
            await conn.execute(self.json_sql, orjson.dumps(rows).decode())

    async def copy(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
        records = [tuple(as_text(r.get(c)) for c in COLUMNS) for r in rows]
        async with conn.transaction():
            await conn.execute(self.stage_sql)
            await conn.copy_records_to_table(
                self.stage, records=records, columns=COLUMNS, schema_name="pg_temp"
            )
            await conn.execute(self.from_stage_sql)

    async def copy_typed(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
        """COPY at its best: values already of the columns' types, no text conversion."""
        records = [tuple(r.get(c) for c in COLUMNS) for r in rows]
        async with conn.transaction():
            await conn.execute(self.typed_stage_sql)
            await conn.copy_records_to_table(
                self.typed_stage, records=records, columns=COLUMNS, schema_name="pg_temp"
            )
            await conn.execute(self.from_typed_stage_sql)

    async def executemany(self, conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
        records = [tuple(as_text(r.get(c)) for c in COLUMNS) for r in rows]
        async with conn.transaction():
            await conn.executemany(self.prepared_sql, records)


def make_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    stamp = now_rfc3339()
    return [make_row(i, rng, stamp) for i in range(1, n + 1)]


async def timed(conn: asyncpg.Connection, write: Writer, rows: list[dict], batch: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(rows), batch):
        await write(conn, rows[start : start + batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rows_per_s": len(rows) / wall, "client_cpu_us_per_row": cpu * 1e6 / len(rows)}


async def measure(rows: int, batch: int, repeats: int, only: list[str]) -> dict[str, Any]:
    schema = f"bench_upsert_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_URL)
    await conn.execute(f"CREATE SCHEMA {schema}")
    table = f"{schema}.target"
    try:
        columns = ", ".join(
            f"{c} {TYPES.get(c, 'text')}{' PRIMARY KEY' if c == 'id' else ''}" for c in COLUMNS
        )
        await conn.execute(f"CREATE TABLE {table} ({columns})")
        paths = Paths(table)
        inserts, updates = make_rows(rows, 1), make_rows(rows, 2)
        found: dict[str, dict[str, list[dict]]] = {p: {"insert": [], "update": []} for p in only}
        for _ in range(repeats):
            for name in only:  # interleaved, so load changes on the machine hit every path
                write = getattr(paths, name)
                await conn.execute(f"TRUNCATE {table}")
                found[name]["insert"].append(await timed(conn, write, inserts, batch))
                found[name]["update"].append(await timed(conn, write, updates, batch))
                count = await conn.fetchval(f"SELECT count(*) FROM {table}")
                assert count == rows, f"{name}: {count} rows in the table, expected {rows}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
    summary: dict[str, Any] = {"rows": rows, "batch": batch, "repeats": repeats}
    for name, phases in found.items():
        summary[name] = {
            phase: {
                key: round(statistics.median(run[key] for run in runs), 1)
                for key in ("rows_per_s", "client_cpu_us_per_row")
            }
            for phase, runs in phases.items()
        }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.pgupsert", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="json,copy,copy_typed,executemany")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.rows, args.batch, args.repeats, args.paths.split(",")))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
