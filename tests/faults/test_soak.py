"""A soak at moderate load with the retention lowered: memory and the store's row counts stay
flat. FAULTS_SOAK_SECONDS sets its length (the issue's figure is 600)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    Cluster,
    Load,
    Mirror,
    TimedReceiver,
    env_float,
    figure,
    resources,
)

SOAK = env_float("FAULTS_SOAK_SECONDS", 180.0)
SAMPLE = 5.0
#: Retention lowered so that pruning shows within the soak. FAULTS_SOAK_ENV ("K=V,K=V")
#: overrides or adds settings.
RETENTION = {
    "SYNC_RETENTION_RUNS_DAYS": str(20 / 86400),
    "SYNC_RETENTION_RUNS_PER_SYNC": "10",
    "SYNC_RETENTION_REJECTED_DAYS": str(20 / 86400),
    "SYNC_RETENTION_OPEN_SNAPSHOT_DAYS": str(20 / 86400),
    "SYNC_STORE_PRUNE_INTERVAL_SECONDS": "5",
    "SYNC_RETENTION_CLOSED_SNAPSHOT_DAYS": str(20 / 86400),
}
#: Tables that retention bounds; row_state (pending and synced rows) is bounded by the keys.
PRUNED = ("sync_runs", "rejected_rows", "snapshots", "snapshot_keys")
COUNTED = (*PRUNED, "row_state")


def soak_env() -> dict[str, str]:
    extra = os.environ.get("FAULTS_SOAK_ENV", "")
    pairs = [item.split("=", 1) for item in extra.split(",") if "=" in item]
    return {**RETENTION, **{k.strip(): v.strip() for k, v in pairs}}


def count_rows(path: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED}


def grows(series: list[float], slack: float) -> bool:
    """True when the last third's peak exceeds the middle third's peak by more than `slack`."""
    third = len(series) // 3
    middle, last = series[third : 2 * third], series[2 * third :]
    return max(last) > max(middle) + slack


@pytest.mark.timeout(SOAK + 300)
async def test_soak_memory_and_store_stay_flat(
    cluster: Cluster, receiver: TimedReceiver, tmp_path: Path
) -> None:
    other = await TimedReceiver().start()
    try:
        data = resources(receiver.url)
        data["destinations"].append(
            {
                **data["destinations"][0],
                "id": "2",
                "slug": "other",
                "name": "other",
                "configuration": {"url": other.url},
            }
        )
        data["syncs"].append(
            {
                **data["syncs"][0],
                "id": "2",
                "slug": "items-manual",
                "destinationId": "2",
                "schedule": {"type": "manual"},
            }
        )
        cluster.write_resources(data)
        cluster.env.update(soak_env())
        mirror = Mirror(receiver)
        service = await cluster.service()
        store = tmp_path / "store.db"
        load = Load(cluster, 2000, random.Random(5))
        samples: list[tuple[float, int, dict[str, int]]] = []
        start = time.monotonic()
        stopping = False
        stream = asyncio.create_task(load.run(20, stop=lambda: stopping))
        tick = 0
        try:
            while time.monotonic() - start < SOAK:
                tick += 1
                # Rejected rows, run records and a snapshot that never closes, every tick.
                await cluster.produce(
                    {"modelId": "1", "op": "upsert", "rows": [{"v": f"no key {tick}"}]}
                )
                await cluster.event(
                    "snapshot", [{"id": 100_000 + tick, "v": "snap"}], snapshotId=f"s{tick}"
                )
                await service.api("POST", "/syncs/2/trigger", {})
                await asyncio.sleep(SAMPLE)
                counts = await asyncio.to_thread(count_rows, store)
                samples.append((time.monotonic() - start, service.rss_bytes(), counts))
                assert service.alive, cluster.logs()
        finally:
            stopping = True
            await stream
        await mirror.converge(cluster.model, 90, "convergence after the soak")
    finally:
        await other.stop()

    rss = [s[1] / 2**20 for s in samples]
    table = {t: [s[2][t] for s in samples] for t in COUNTED}
    third = len(samples) // 3
    figure(
        f"soak {SOAK:.0f}s at 20 events/s ({load.events} events): RSS MiB first/middle/last "
        f"{rss[0]:.0f}/{rss[third]:.0f}/{rss[-1]:.0f} (peak {max(rss):.0f}); rows at "
        f"middle/end " + ", ".join(f"{t} {v[third]}/{v[-1]}" for t, v in table.items())
    )
    assert not grows(rss, slack=max(rss[third] * 0.15, 20)), f"RSS grows: {rss}"
    growing = {t: table[t] for t in PRUNED if grows(table[t], slack=max(table[t][third] * 0.1, 5))}
    assert not growing, f"store tables grow: {growing}"
