"""Background upkeep of the pipeline: catalog changes, and the gauges read from the store."""

from __future__ import annotations

import asyncio
import logging
import time

from service.core.metrics import Metrics
from service.pipeline.catalog import CatalogView
from service.store.base import Store

log = logging.getLogger(__name__)

CATALOG_POLL_SECONDS = 1.0
GAUGE_POLL_SECONDS = 5.0


class Watcher:
    """Reloads the catalog every second (so triggers and schedules see new syncs without an
    event) and refreshes the pending, failed and snapshot gauges every few seconds."""

    def __init__(
        self, store: Store, catalog: CatalogView, metrics: Metrics, snapshot_warn_seconds: float
    ) -> None:
        self._store = store
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
