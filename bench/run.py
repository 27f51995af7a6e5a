"""Runs the bench: `python -m bench.run [--quick]` (or `.venv/bin/python bench/run.py`).

Needs the local Kafka broker (`make kafka-up`) and, for S4, PostgreSQL (`make pg-up`).
Writes bench/results/<UTC timestamp>.json and bench/results/latest.md, and prints the table.
bench/README.md says what each scenario measures and how."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from bench import events, report
from bench.context import Bench
from bench.events import delete_topics
from bench.latency import run_latency
from bench.memory import run_memory
from bench.profiler import Profiler
from bench.receiver import ReceiverProcess
from bench.service import tuning
from bench.settings import FULL, PG_URL, QUICK, Profile
from bench.throughput import run_shape
from bench.tree import ServiceTree

log = logging.getLogger("bench")

ALL = ("S0", "F1", "F2", "S1", "S2", "S3", "S4", "S5", "L1", "M1")
#: The peer (Flink SQL, needs a JVM): only when asked for (`--only`, `--peer`, make bench-peer).
PEER = ("P4", "P4d")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer events: a few minutes")
    parser.add_argument(
        "--only", default=",".join(ALL), help=f"comma-separated scenarios (default {','.join(ALL)})"
    )
    parser.add_argument("--rows", type=int, help="rows per event shape (overrides the profile)")
    parser.add_argument(
        "--peer", action="store_true", help=f"also the Flink SQL peer ({', '.join(PEER)})"
    )
    parser.add_argument(
        "--s5-keys",
        choices=("row", "none"),
        help="S5's record keys: each event's first row key (default), or none",
    )
    parser.add_argument(
        "--keys",
        choices=("serial", "random"),
        help="rows' ids: 1, 2, 3, ... (default), or the same ids in random order over 63 bits",
    )
    parser.add_argument(
        "--m1-backlog",
        type=int,
        metavar="ROWS",
        help="M1: rows left waiting by the stall (full: 1,000,000; 0: 20%% of S1's rate)",
    )
    parser.add_argument(
        "--s1-rate",
        type=float,
        metavar="ROWS_PER_S",
        help="L1 and M1: load as fractions of this rate instead of this run's S1 (1-row events), "
        "so runs of different code offer the same load",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the service of S1-S4 into DIR"
    )
    parser.add_argument(
        "--commit",
        metavar="REV",
        help="measure service/ as of this commit (git archive) instead of the working tree",
    )
    return parser.parse_args(argv)


async def postgres_version() -> str | None:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()


async def bench(
    profile: Profile,
    only: set[str],
    profile_dir: Path | None,
    commit: str | None,
    s1_rate: float | None = None,
) -> dict[str, Any]:
    started = time.time()
    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"sync-bench-{run_id}-"))
    tree = ServiceTree.at_commit(commit, workdir / "tree") if commit else ServiceTree.working()
    results: dict[str, Any] = {
        "run_id": run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile.as_dict(),
        "scenarios": sorted(only),
        "s1_rate_given": s1_rate,
        "service_env": tuning(),
        "machine": report.machine(),
        "versions": report.versions(await postgres_version(), tree.describe()),
        "method": (
            "Events are produced before each consumer starts. Rates are rows / seconds from "
            "the consumer-group join (service: /readyz first 200, polled every 20 ms; S0: its "
            "rebalance listener) to the last row done (service: the completion counter on "
            "/metrics, polled every 20 ms near the end; S0: last record decoded). S0 is the "
            "median of its repeats. Service and receiver are separate processes sharing the "
            "machine with Kafka, PostgreSQL and this runner."
        ),
        "shapes": {},
    }
    log.info("bench %s (%s profile), work folder %s", run_id, profile.name, workdir)
    bench = None
    try:
        async with ReceiverProcess() as receiver:
            bench = Bench(profile, run_id, workdir, receiver, Profiler(profile_dir), tree)
            for rows_per_event in profile.shapes:
                results["shapes"][f"{rows_per_event}r"] = await run_shape(
                    bench, rows_per_event, only
                )
            s1 = s1_rate or results["shapes"].get("1r", {}).get("S1", {}).get("rows_per_s")
            for name, scenario in (("L1", run_latency), ("M1", run_memory)):
                if name not in only:
                    continue
                if not s1:
                    results[name] = {"error": "needs S1's 1-row rate"}
                    continue
                try:
                    results[name] = await scenario(bench, s1)
                except Exception as exc:
                    log.exception("%s failed", name)
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    finally:
        if bench is not None:
            await delete_topics(bench.topics)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["duration_s"] = round(time.time() - started, 1)
    report.add_ratios(results)
    results["targets"] = report.evaluate(results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    profile = QUICK if args.quick else FULL
    if args.rows:
        profile = Profile(**{**profile.as_dict(), "rows_per_shape": args.rows})
    if args.s5_keys:
        profile = Profile(**{**profile.as_dict(), "scale_out_keys": args.s5_keys})
    if args.keys:
        profile = Profile(**{**profile.as_dict(), "key_order": args.keys})
    events.KEY_ORDER = profile.key_order
    if args.m1_backlog is not None:
        profile = Profile(**{**profile.as_dict(), "memory_backlog_rows": args.m1_backlog})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if args.peer:
        only |= set(PEER)
    unknown = only - set(ALL) - set(PEER)
    if unknown:
        known = ", ".join(ALL + PEER)
        print(f"bench: unknown scenarios {sorted(unknown)} (known: {known})")
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.s1_rate is not None and args.s1_rate <= 0:
        print("bench: --s1-rate must be a positive rate in rows/s")
        return 2
    results = asyncio.run(bench(profile, only, args.profile, args.commit, args.s1_rate))
    json_path, md_path = report.write(results, stamp)
    print()
    print(md_path.read_text())
    print(f"bench: wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
