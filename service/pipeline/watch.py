"""Background upkeep of the pipeline: catalog changes, the gauges read from the store, runs
whose holder is gone, and the store's retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from service.core.metrics import Metrics
from service.pipeline.catalog import CatalogView
from service.status import StatusReporter
from service.store.base import Retention, Store

log = logging.getLogger(__name__)

CATALOG_POLL_SECONDS = 1.0
GAUGE_POLL_SECONDS = 5.0
#: Runs left open by a replica that died are closed this often (their lease expired).
ORPHAN_POLL_SECONDS = 30.0
#: The store is pruned this often, the first time shortly after start.
PRUNE_SECONDS = 3600.0
FIRST_PRUNE_SECONDS = 60.0


class Upkeep:
    """The store's housekeeping: runs left queued or processing by a holder that is gone are
    closed as interrupted (by the store) and reported here, their syncs told that rows wait;
    and what the retention no longer keeps is pruned, which is what bounds the store's size."""

    def __init__(
        self,
        store: Store,
        reporter: StatusReporter,
        notify_pending: Callable[[Iterable[str]], None],
        retention: Retention,
        *,
        prune_seconds: float = PRUNE_SECONDS,
        first_prune_seconds: float = FIRST_PRUNE_SECONDS,
        orphan_seconds: float = ORPHAN_POLL_SECONDS,
    ) -> None:
        self._store = store
        self._reporter = reporter
        self._notify_pending = notify_pending
        self._retention = retention
        self._prune_seconds = prune_seconds
        self._orphan_seconds = orphan_seconds
        now = time.monotonic()
        self._next_prune = now + first_prune_seconds
        self._next_orphans = now + orphan_seconds

    async def close_orphaned_runs(self) -> int:
        """Close and report the runs whose holder is gone; how many."""
        closed = await self._store.close_orphaned_runs()
        for run in closed:
            log.info("sync %s: run %s interrupted: its process stopped", run.sync_id, run.id)
            # Saved by the store already: a second save could meet a newer lease.
            await self._reporter.report_saved(run)
        if closed:
            self._notify_pending({run.sync_id for run in closed})
        return len(closed)

    async def prune(self) -> dict[str, int]:
        started = time.monotonic()
        counts = await self._store.prune(self._retention)
        level = logging.INFO if any(counts.values()) else logging.DEBUG
        log.log(
            level,
            "store pruned in %.1fs: %s",
            time.monotonic() - started,
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        )
        return counts

    async def tick(self) -> None:
        """Whatever is due."""
        now = time.monotonic()
        if now >= self._next_orphans:
            self._next_orphans = now + self._orphan_seconds
            await self.close_orphaned_runs()
        if now >= self._next_prune:
            self._next_prune = now + self._prune_seconds
            await self.prune()


class Watcher:
    """Reloads the catalog every second (so triggers and schedules see new syncs without an
    event) and refreshes the pending, failed and snapshot gauges every few seconds."""

    def __init__(
        self,
        store: Store,
        catalog: CatalogView,
        metrics: Metrics,
        snapshot_warn_seconds: float,
        upkeep: Upkeep | None = None,
    ) -> None:
        self._store = store
        self._upkeep = upkeep
        self._catalog = catalog
        self._metrics = metrics
        self._snapshot_warn_seconds = snapshot_warn_seconds
        self._reported_snapshots: set[tuple[str, str]] = set()
        self.stopping = False

    async def run(self) -> None:
        since_gauge = GAUGE_POLL_SECONDS
        failing = False
        while not self.stopping:
            try:
                await self._catalog.refresh()
                if since_gauge >= GAUGE_POLL_SECONDS:
                    await self.gauges()
                    since_gauge = 0.0
                if failing:
                    log.info("catalog refresh works again")
                failing = False
            except Exception as exc:
                # Once per outage with its traceback, not every second while the store is away.
                if not failing:
                    log.exception("catalog refresh failed")
                else:
                    log.debug("catalog refresh still fails: %s", exc)
                failing = True
            if self._upkeep is not None:
                try:
                    await self._upkeep.tick()
                except Exception as exc:
                    log.warning("store upkeep failed (tried again later): %s", exc)
            await asyncio.sleep(CATALOG_POLL_SECONDS)
            since_gauge += CATALOG_POLL_SECONDS

    async def gauges(self) -> None:
        counts = await self._store.pending_counts()
        self._metrics.pending_rows.set(sum(counts.values()))
        failed = await self._store.failed_counts()
        self._metrics.failed_rows.set(sum(failed.values()))
        await self.watch_snapshots()

    async def watch_snapshots(self) -> None:
        snapshots = await self._store.open_snapshots()
        limit = self._snapshot_warn_seconds
        now = time.time()
        stale = [(s, n, at) for s, n, at in snapshots if now - at > limit]
        self._metrics.open_snapshots.set(len(snapshots))
        self._metrics.stale_snapshots.set(len(stale))
        for sync_id, snapshot_id, opened_at in stale:
            if (sync_id, snapshot_id) not in self._reported_snapshots:
                self._reported_snapshots.add((sync_id, snapshot_id))
                log.warning(
                    "sync %s: snapshot %r open for %.0f s without its last: true event; "
                    "until it closes it removes nothing",
                    sync_id,
                    snapshot_id,
                    now - opened_at,
                )
