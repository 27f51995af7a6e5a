"""Status: each run state is saved, mirrored on the sync, published as a CloudEvent, counted."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service.core.metrics import Metrics
from service.core.models import Sync, SyncRun, SyncStatus
from service.store.base import Store

log = logging.getLogger(__name__)


def cloud_event(sync_id: str, run: SyncRun, now: datetime | None = None) -> dict[str, object]:
    """A CloudEvents 1.0 structured-mode event for the run's current status."""
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/syncs/{sync_id}",
        "type": f"sync.run.{run.status.value}",
        "time": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {**run.to_json_dict(), "syncId": sync_id},
    }


class StatusReporter:
    """Implements RunReporter. Calls for one sync come in order and are handled in order."""

    def __init__(
        self, store: Store, producer: AIOKafkaProducer | None, topic: str, metrics: Metrics
    ) -> None:
        self._store = store
        self._producer = producer
        self._topic = topic
        self._metrics = metrics

    async def report(self, sync: Sync, run: SyncRun) -> None:
        await self._store.save_run(run)
        await self._announce(sync.id, run)

    async def report_saved(self, run: SyncRun) -> None:
        """Mirror and publish a run the store has already written (a run closed as
        interrupted at start): saving it again could meet a newer lease and be refused."""
        await self._announce(run.sync_id, run)

    async def _announce(self, sync_id: str, run: SyncRun) -> None:
        final = run.status.is_final
        last_run_at = (run.started_at or run.created_at) if final else None
        await self._store.set_sync_status(sync_id, SyncStatus(run.status.value), last_run_at)
        if final:
            self._metrics.runs.labels(run.status.value).inc()
            log.info(
                "sync %s run %s %s: planned %d, delivered %d, failed %d%s",
                sync_id,
                run.id,
                run.status.value,
                run.planned_rows.total,
                run.successful_rows.total,
                run.failed_rows.total,
                f" ({run.error})" if run.error else "",
            )
        if self._producer is None:
            return
        try:
            await self._producer.send_and_wait(
                self._topic, value=orjson.dumps(cloud_event(sync_id, run)), key=sync_id.encode()
            )
        except KafkaError as exc:
            # The run record in the store stays the source of truth; the event is a copy.
            log.warning("status event for sync %s run %s not published: %s", sync_id, run.id, exc)
