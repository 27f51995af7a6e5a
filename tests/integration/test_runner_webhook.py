"""The runner against a real SQLite store and a real aiohttp webhook receiver."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
from typing import Any

from service.core.interfaces import RunRequest, SystemClock
from service.core.metrics import Metrics
from service.core.models import (
    Destination,
    Model,
    RunStatus,
    Sync,
    SyncConfiguration,
    SyncRun,
    referenced_columns,
)
from service.core.rows import RowChange, RowOutcomes
from service.destinations.registry import DestinationContext, open_destination
from service.ingest import Ingest
from service.router import build_routes
from service.runner.retry import RetryPolicy
from service.runner.runner import SyncRunner
from service.store.sqlite import SqliteStore
from tests.support import LOCAL_ONLY, Receiver, change, wait_for

MAPPINGS = [
    {"from": "id", "to": "id"},
    {"from": "email", "to": "email_address"},
    {"type": "static", "to": "source", "value": "crm"},
]


class RecordingReporter:
    def __init__(self) -> None:
        self.statuses: list[str] = []

    async def report(self, sync: Sync, run: SyncRun) -> None:
        self.statuses.append(run.status.value)


class Harness:
    def __init__(self, store: SqliteStore, receiver: Receiver, **runner: Any) -> None:
        self.store = store
        self.receiver = receiver
        self.metrics = Metrics()
        self.reporter = RecordingReporter()
        self.ingest = Ingest(store, self.metrics)
        self.runner = SyncRunner(
            store,
            functools.partial(
                open_destination, context=DestinationContext("127.0.0.1:9", LOCAL_ONLY)
            ),
            self.reporter,
            self.metrics,
            SystemClock(),
            RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05),
            **runner,
        )
        self.sync: Sync

    async def setup(
        self,
        mode: str = "mirror",
        *,
        mappings: list[dict[str, Any]] = MAPPINGS,
        schedule: dict[str, Any] | None = None,
        **destination: Any,
    ) -> None:
        model = Model(id="1", name="users", slug="users", primary_key="id")
        config = {"url": self.receiver.url, **destination}
        await self.store.upsert(model)
        await self.store.upsert(
            Destination(id="1", name="crm", slug="crm", type="webhook", configuration=config)
        )
        configuration = {"mode": mode, "mappings": mappings}
        parsed = SyncConfiguration.model_validate(configuration)
        self.sync = Sync(
            id="7",
            slug="users-to-crm",
            model_id="1",
            destination_id="1",
            schedule=schedule or {"type": "manual"},
            configuration=configuration,
            primary_key="id",
            referenced_columns=referenced_columns("id", parsed),
        )
        await self.store.upsert(self.sync)

    async def send(self, op: str, rows: list[dict[str, Any]]) -> None:
        event = change({"modelId": "1", "op": op, "rows": rows})
        await self.ingest.write([event], build_routes([self.sync]))

    async def run(self, **request: Any) -> Any:
        return await self.runner.run(self.sync, RunRequest("test", **request))

    def delivered(self, op: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "sync_rows_delivered_total",
            {"destination_type": "webhook", "op": op, "outcome": outcome},
        )
        return value or 0.0


def user(i: int, email: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": i, "email": email or f"u{i}@example.com", **extra}


async def test_sends_added_changed_removed_and_skips_unchanged(harness: Harness) -> None:
    await harness.setup(mode="mirror")
    await harness.send("upsert", [user(1), user(2), user(3)])
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert harness.reporter.statuses == ["queued", "processing", "reporting", "success"]
    assert sorted(harness.receiver.ops()) == [("added", "1"), ("added", "2"), ("added", "3")]
    assert harness.receiver.rows[0]["data"] == {
        "id": 1,
        "email_address": "u1@example.com",
        "source": "crm",
    }

    harness.receiver.rows.clear()
    await harness.send("upsert", [user(1, "new@example.com"), user(2, plan="pro"), user(3)])
    await harness.send("delete", [{"id": 3}])
    run = await harness.run()
    # user 2 changed only an unreferenced column; user 3 was deleted.
    assert harness.receiver.ops() == [("changed", "1"), ("removed", "3")]
    removed = harness.receiver.rows[1]
    assert removed["data"] == {"id": 3, "email_address": "u3@example.com", "source": "crm"}
    assert run.planned_rows.changed_count == 1
    assert run.planned_rows.removed_count == 1
    assert run.successful_rows.total == 2
    assert await harness.store.pending_counts() == {}

    harness.receiver.rows.clear()
    run = await harness.run()
    assert harness.receiver.rows == []
    assert run.planned_rows.total == 0


async def test_upsert_mode_does_not_send_removed_rows(harness: Harness) -> None:
    await harness.setup(mode="upsert")
    await harness.send("upsert", [user(1)])
    await harness.run()
    await harness.send("delete", [{"id": 1}])
    run = await harness.run()
    assert harness.receiver.ops() == [("added", "1")]
    assert run.planned_rows.total == 0
    assert await harness.store.pending_counts() == {}


async def test_batches_respect_batch_size(harness: Harness) -> None:
    await harness.setup(batchSize=2)
    await harness.send("upsert", [user(i) for i in range(5)])
    run = await harness.run()
    sizes = [len(r.json["rows"]) for r in harness.receiver.requests]
    assert sizes == [2, 2, 1]
    batch_ids = {r.json["batchId"] for r in harness.receiver.requests}
    assert len(batch_ids) == 3
    assert {r.json["runId"] for r in harness.receiver.requests} == {run.id}
    assert {r.json["syncId"] for r in harness.receiver.requests} == {"7"}


async def test_batches_are_made_across_pages_of_the_store(harness: Harness) -> None:
    """A run reads pending rows a page at a time (SYNC_RUN_PAGE_ROWS); its batches still fill
    to the destination's batch size across pages, and every row arrives once."""
    paged = Harness(harness.store, harness.receiver, page_size=3)
    try:
        await paged.setup(batchSize=5)
        await paged.send("upsert", [user(i) for i in range(12)])
        run = await paged.run()
        assert run.status == RunStatus.SUCCESS
        assert [len(r.json["rows"]) for r in paged.receiver.requests] == [5, 5, 2]
        assert sorted(int(r["key"]) for r in paged.receiver.rows) == list(range(12))
        assert await paged.store.pending_counts() == {}
    finally:
        await paged.runner.close()


async def test_503_then_200_delivers_after_a_retry(harness: Harness) -> None:
    await harness.setup()
    harness.receiver.replies = [(503, {"error": "busy"}, {"Retry-After": "0"})]
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert len(harness.receiver.requests) == 2
    assert sorted(harness.receiver.ops()) == [("added", "1"), ("added", "2")]
    retries = harness.metrics.registry.get_sample_value(
        "sync_destination_retries_total", {"destination_type": "webhook"}
    )
    assert retries == 1


async def test_400_keeps_rows_pending_with_the_error_until_a_later_run(harness: Harness) -> None:
    await harness.setup()
    harness.receiver.default = (400, {"message": "bad field"}, {})
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run()
    assert run.status is RunStatus.WARNING
    # The batch, then each half (one row each), were refused.
    assert len(harness.receiver.requests) == 3
    assert run.failed_rows.added_count == 2
    assert harness.receiver.rows == []
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [(r.key, r.attempts) for r in page] == [("1", 1), ("2", 1)]
    assert all(r.error and "HTTP 400" in r.error and "bad field" in r.error for r in page)
    assert harness.delivered("added", "failed") == 2

    harness.receiver.default = (200, {}, {})
    run = await harness.run()
    assert run.status is RunStatus.SUCCESS
    assert sorted(harness.receiver.ops()) == [("added", "1"), ("added", "2")]
    assert await harness.store.pending_counts() == {}


async def test_split_retries_isolate_one_bad_row_in_a_batch_of_100(harness: Harness) -> None:
    await harness.setup()

    def refuse_37(payload: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        if any(r["key"] == "37" for r in payload["rows"]):
            return 422, {"message": "row 37 is invalid"}, {}
        return 200, {}, {}

    harness.receiver.reply_with = refuse_37
    await harness.send("upsert", [user(i) for i in range(100)])
    run = await harness.run()
    assert run.status is RunStatus.WARNING
    assert run.successful_rows.added_count == 99
    assert run.failed_rows.added_count == 1
    assert sorted(int(k) for _, k in harness.receiver.ops()) == [i for i in range(100) if i != 37]
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [r.key for r in page] == ["37"]
    assert page[0].error is not None
    assert page[0].error.startswith("HTTP 422")
    assert "row 37 is invalid" in page[0].error
    # log2(100) halvings on the path to the bad row, each with a sibling half: few requests.
    assert len(harness.receiver.requests) <= 1 + 2 * 7


async def test_rows_rejected_in_a_2xx_body_stay_pending_alone(harness: Harness) -> None:
    await harness.setup()
    harness.receiver.replies = [(200, {"rejected": [{"key": "2", "error": "invalid email"}]}, {})]
    await harness.send("upsert", [user(1), user(2), user(3)])
    run = await harness.run()
    assert run.status is RunStatus.WARNING
    assert run.successful_rows.added_count == 2
    assert run.failed_rows.added_count == 1
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [(r.key, r.error) for r in page] == [("2", "invalid email")]


async def test_401_fails_the_run_and_keeps_every_row(harness: Harness) -> None:
    await harness.setup(batchSize=1)
    harness.receiver.default = (401, {"message": "token expired"}, {})
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run()
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "HTTP 401" in run.error
    # The run stops at the first refused batch: the second row is not even attempted.
    assert len(harness.receiver.requests) == 1
    assert (await harness.store.pending_counts()) == {"7": 2}


async def test_unreachable_after_retries_fails_the_run(harness: Harness) -> None:
    await harness.setup()
    harness.receiver.default = (503, {}, {})
    await harness.send("upsert", [user(1)])
    run = await harness.run()
    assert run.status is RunStatus.FAILED
    assert run.error is not None
    assert "gave up after 3 attempts" in run.error
    assert len(harness.receiver.requests) == 3
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [r.key for r in page] == ["1"]


async def test_signature_header_is_hmac_of_the_body(harness: Harness) -> None:
    await harness.setup(secret="s3cret", headers={"X-Api-Key": "abc"})
    await harness.send("upsert", [user(1)])
    await harness.run()
    request = harness.receiver.requests[0]
    expected = hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Sync-Signature"] == f"sha256={expected}"
    assert request.headers["X-Api-Key"] == "abc"


async def test_newer_version_arriving_during_delivery_stays_pending(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1)])
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    # A newer version of key 1 lands after the runner read the page and sent it.
    await harness.send("upsert", [user(1, "newer@example.com")])
    sent = RowChange("added", "1", {"id": 1}, page[0].seq, page[0].row_hash)
    await harness.store.record_outcomes("7", RowOutcomes(delivered=[sent]), 0.0)
    left = await harness.store.pending_page("7", 0, 10**9, 10)
    assert len(left) == 1
    assert left[0].seq > page[0].seq
    run = await harness.run()
    assert harness.receiver.ops() == [("changed", "1")]
    assert run.successful_rows.changed_count == 1


async def test_adaptive_concurrency_rises_when_fast_and_falls_on_429_and_slowness(
    harness: Harness,
) -> None:
    await harness.setup(batchSize=10, maxConcurrency=16)
    harness.receiver.delay = 0.01
    seen: list[tuple[str, int]] = []  # (phase, limit) at every request the endpoint gets
    phase = {"name": "fast", "429s": 0}

    def limit() -> int:
        value = harness.metrics.registry.get_sample_value(
            "sync_destination_concurrency_limit", {"destination_type": "webhook"}
        )
        return int(value or 1)

    def reply(payload: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        seen.append((phase["name"], limit()))
        if phase["name"] == "429" and phase["429s"] < 6:
            phase["429s"] += 1
            return 429, {}, {"Retry-After": "0"}
        return 200, {}, {}

    harness.receiver.reply_with = reply

    async def run_phase(name: str, first: int) -> list[int]:
        phase["name"] = name
        await harness.send("upsert", [user(i) for i in range(first, first + 400)])
        assert (await harness.run()).status is RunStatus.SUCCESS
        return [v for n, v in seen if n == name]

    fast = await run_phase("fast", 0)
    after_429 = await run_phase("429", 1000)
    harness.receiver.delay = 0.25  # the endpoint slows down 25-fold
    slow = await run_phase("slow", 2000)
    print("\nconcurrency limit at each request:")
    for name, values in (("fast", fast), ("429", after_429), ("slow", slow)):
        print(f"  {name:>4}: {values}")
    assert fast[0] == 1
    assert max(fast) >= 8  # rises while the endpoint keeps up
    assert min(after_429) < fast[-1]  # 429s cut it
    assert min(slow) < after_429[-1]  # so does a jump in latency


async def test_full_resync_sends_every_synced_row_again(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1), user(2), user(3)])
    await harness.run()
    await harness.send("upsert", [user(2, "new@example.com")])
    harness.receiver.rows.clear()
    run = await harness.run(full_resync=True)
    assert sorted(harness.receiver.ops()) == [("changed", "1"), ("changed", "2"), ("changed", "3")]
    two = next(r for r in harness.receiver.rows if r["key"] == "2")
    assert two["data"]["email_address"] == "new@example.com"  # the pending version wins
    assert run.planned_rows.changed_count == 3
    harness.receiver.rows.clear()
    await harness.run()
    assert harness.receiver.rows == []  # and afterwards nothing is left to send


async def test_reset_cdc_records_pending_rows_as_synced_without_sending(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run(reset_cdc=True)
    assert harness.receiver.requests == []
    assert run.status is RunStatus.SUCCESS
    assert await harness.store.pending_counts() == {}
    await harness.send("upsert", [user(1), user(2, "changed@example.com")])
    await harness.run()
    assert harness.receiver.ops() == [("changed", "2")]


async def test_a_row_refused_twice_then_accepted_is_delivered_once_and_counted_before(
    harness: Harness,
) -> None:
    await harness.setup()
    harness.receiver.reply_with = lambda payload: (
        200,
        {
            "rejected": [
                {"key": r["key"], "error": "not yet"} for r in payload["rows"] if r["key"] == "2"
            ]
        },
        {},
    )
    await harness.send("upsert", [user(1), user(2)])
    first = await harness.run()
    second = await harness.run()
    assert (first.failed_rows.added_count, second.failed_rows.added_count) == (1, 1)
    assert (first.successful_rows.added_count, second.successful_rows.added_count) == (1, 0)
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [(r.key, r.attempts, r.error) for r in page] == [("2", 2, "not yet")]

    harness.receiver.reply_with = None
    third = await harness.run()
    assert third.status is RunStatus.SUCCESS
    assert third.successful_rows.added_count == 1
    assert sorted(harness.receiver.ops()) == [("added", "1"), ("added", "2")]  # each once
    assert await harness.store.pending_counts() == {}


async def test_a_sync_held_by_another_replica_is_not_run_here(harness: Harness) -> None:
    await harness.setup()
    await harness.send("upsert", [user(1)])
    assert await harness.store.acquire_lease("7", "another-replica", 60)
    assert await harness.run() is None
    assert harness.receiver.requests == []
    assert harness.reporter.statuses == []  # no run record either
    await harness.store.release_lease("7", "another-replica")
    run = await harness.run()
    assert run is not None
    assert run.status is RunStatus.SUCCESS
    assert harness.receiver.ops() == [("added", "1")]


async def test_a_row_changed_back_while_its_last_version_is_in_flight_is_sent(
    harness: Harness,
) -> None:
    """v0 synced, v1 in flight, then v0 again: v0 differs from what the destination will hold
    (v1), so it must be sent, not dropped as equal to the v0 the store held before v1 landed."""
    await harness.setup(mode="upsert")
    await harness.send("upsert", [user(1, "v0@example.com")])
    await harness.run()
    harness.receiver.rows.clear()
    harness.receiver.delay = 0.5
    await harness.send("upsert", [user(1, "v1@example.com")])
    running = asyncio.create_task(harness.run(window=10.0))
    await wait_for(lambda: len(harness.receiver.requests) >= 2, what="v1 in flight")
    await harness.send("upsert", [user(1, "v0@example.com")])
    harness.receiver.delay = 0.0
    run = await running
    emails = [r["data"]["email_address"] for r in harness.receiver.rows]
    assert emails == ["v1@example.com", "v0@example.com"]
    assert run.successful_rows.changed_count == 2
