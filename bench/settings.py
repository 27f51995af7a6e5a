"""How big a bench run is (quick or full), where the local broker and database are, and the
targets each figure is held against."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SYNC_SERVICE = ROOT / ".venv" / "bin" / "sync-service"

#: Only local endpoints: the bench never sends traffic anywhere but 127.0.0.1.
KAFKA = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
PG_URL = f"postgresql://sync:sync@127.0.0.1:{os.environ.get('PG_PORT', '55432')}/sync"

#: Every event of the bench belongs to this model, so it is the key of every record.
MODEL_ID = "1"

#: M1's RSS targets hold with this many rows waiting behind the stalled destination (a full
#: run's load during the stall).
M1_BACKLOG_ROWS = 1_000_000


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    #: Rows per event shape; a shape of n rows per event has rows_per_shape / n events.
    rows_per_shape: int
    shapes: tuple[int, ...] = (1, 100)
    #: S0 runs this many times and reports the median (it is every ratio's denominator).
    baseline_repeats: int = 5
    #: Like the service's SYNC_FETCH_MAX_RECORDS default.
    fetch_max_records: int = 2000
    batch_size: int = 500
    linger_ms: int = 0
    #: L1: open-loop loads as fractions of S1's 1-row rate, each held this long.
    latency_loads: tuple[float, ...] = (0.1, 0.5, 0.8)
    latency_seconds: float = 20.0
    #: M1: load (fraction of S1's 1-row rate) during a receiver stall of this length.
    memory_load: float = 0.2
    memory_warmup_seconds: float = 10.0
    memory_stall_seconds: float = 180.0
    #: M1: when set, the load during the stall is this many rows over the stall (instead of
    #: memory_load), so that many rows wait behind the stalled destination at its end.
    memory_backlog_rows: int = 0
    #: M1 webhook settings: a stalled request gives up after timeout_seconds and is retried
    #: (backoff capped at retry_max_seconds) for max_attempts, far longer than the stall,
    #: so the run waits for the receiver instead of failing its rows.
    memory_timeout_seconds: float = 5.0
    memory_max_attempts: int = 100
    memory_retry_max_seconds: float = 2.0
    #: S5's record keys: "row" (each event's first row key) or "none" (keyless records, for
    #: a service that takes only the model id as a record key).
    scale_out_keys: str = "row"
    #: Rows' ids: "serial" or "random" (see `bench.events.KEY_ORDER`).
    key_order: str = "serial"
    #: Give up on a throughput scenario when it runs slower than this many rows/s.
    floor_rows_per_second: float = 500.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Profile(
    name="quick",
    rows_per_shape=50_000,
    latency_seconds=5.0,
    memory_warmup_seconds=5.0,
    memory_stall_seconds=30.0,
)
FULL = Profile(name="full", rows_per_shape=300_000, memory_backlog_rows=M1_BACKLOG_ROWS)


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for the code (not a test assertion): `figure` compared with `bound`."""

    name: str
    description: str
    bound: float
    at_least: bool = True

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.at_least else value <= self.bound


#: CPU per row of the service in S1, in microseconds (1e6 / the JSON's rows_per_cpu_s).
S1_CPU_US_PER_ROW = 20.0

TARGETS = {
    "S1/S0@1": Target("S1/S0@1", "S1 >= 0.25 x S0 (1-row events)", 0.25),
    "S1/S0@100": Target("S1/S0@100", "S1 >= 0.15 x S0 (100-row events)", 0.15),
    "S1cpu@1": Target(
        "S1cpu@1", "S1 CPU per row <= 20 us (1-row events)", S1_CPU_US_PER_ROW, at_least=False
    ),
    "S1cpu@100": Target(
        "S1cpu@100", "S1 CPU per row <= 20 us (100-row events)", S1_CPU_US_PER_ROW, at_least=False
    ),
    "S2/S0@100": Target("S2/S0@100", "S2 >= 0.3 x S0 (100-row events)", 0.3),
    "S3/S1@1": Target("S3/S1@1", "S3 >= 0.9 x S1 (1-row events)", 0.9),
    "S3/S1@100": Target("S3/S1@100", "S3 >= 0.9 x S1 (100-row events)", 0.9),
    "S3/S0@100": Target("S3/S0@100", "S3 >= 0.15 x S0 (100-row events)", 0.15),
    "S4@1": Target("S4@1", "S4 >= 40,000 rows/s (1-row events)", 40_000),
    "S4@100": Target("S4@100", "S4 >= 40,000 rows/s (100-row events)", 40_000),
    "S4/P4@1": Target(
        "S4/P4@1", "S4 >= 1.2 x Flink SQL at its best (P4 or P4d, 1-row events)", 1.2
    ),
    "S4/P4@100": Target(
        "S4/P4@100", "S4 >= 1.2 x Flink SQL at its best (P4 or P4d, 100-row events)", 1.2
    ),
    "S5/S4@1": Target(
        "S5/S4@1", "S5 >= 1.6 x S4, or CPU per row within 1.2 x S4's (1-row events)", 1.6
    ),
    "S5/S4@100": Target(
        "S5/S4@100", "S5 >= 1.6 x S4, or CPU per row within 1.2 x S4's (100-row events)", 1.6
    ),
    "L1p99@50%": Target("L1p99@50%", "L1 p99 <= 100 ms at 50% load", 100, at_least=False),
    "M1backlog": Target(
        "M1backlog",
        "M1 >= 1,000,000 rows waiting behind the stalled destination at the stall's end",
        M1_BACKLOG_ROWS,
    ),
    "M1max": Target(
        "M1max", "M1 max RSS in the stall <= 256 MiB (1,000,000 rows waiting)", 256, at_least=False
    ),
    "M1growth": Target(
        "M1growth", "M1 RSS flat: max in the stall <= 1.2 x RSS at its start", 1.2, at_least=False
    ),
}
