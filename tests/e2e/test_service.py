"""End to end: events on a real broker reach a real webhook as exactly the rows that changed."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.e2e.conftest import SYNC_SERVICE, Harness, resources
from tests.support import wait_for

pytestmark = pytest.mark.kafka


def user(i: int, email: str | None = None, **extra: object) -> dict[str, object]:
    return {
        "id": i,
        "email": email or f"u{i}@example.com",
        "first": "Ada",
        "last": f"L{i}",
        **extra,
    }


async def read_topic(kafka: str, topic: str, n: int, timeout: float = 20.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


async def test_changed_rows_reach_the_webhook_exactly(e2e: Harness) -> None:
    await e2e.service()
    await e2e.event("upsert", [user(1), user(2), user(3)], emittedAt="2026-01-01T00:00:00Z")
    rows = await e2e.receiver.wait_rows(3)
    assert sorted(r["key"] for r in rows) == ["1", "2", "3"]
    assert {r["op"] for r in rows} == {"added"}
    one = next(r for r in rows if r["key"] == "1")
    # Only mapped fields, under their destination names.
    assert one["data"] == {"id": 1, "email_address": "u1@example.com", "name": "Ada L1"}

    # 1: a referenced column changes; 2: only an unreferenced column; 3: deleted.
    await e2e.event("upsert", [user(1, "new@example.com"), user(2, plan="pro")])
    await e2e.event("delete", [{"id": 3}])
    await e2e.event("upsert", [user(4)])  # a marker: once it arrives, everything before has too
    await e2e.receiver.wait_rows(6)
    await asyncio.sleep(0.5)
    # Versions of one key arrive in order; rows of different keys may overtake each other (a
    # removal is planned from the columns the store keeps, the other rows go from memory).
    assert sorted(e2e.receiver.ops()[3:]) == [("added", "4"), ("changed", "1"), ("removed", "3")]
    later = {r["key"]: r for r in e2e.receiver.rows[3:]}
    assert later["1"]["data"]["email_address"] == "new@example.com"
    assert later["3"]["data"] == {
        "id": 3,
        "email_address": "u3@example.com",
        "name": "Ada L3",
    }

    # Every status a run enters is published as a CloudEvent keyed by sync id.
    events = await read_topic(e2e.kafka, e2e.status_topic, 4)
    first = orjson.loads(events[0].value)
    assert events[0].key == b"1"
    assert first["specversion"] == "1.0"
    assert first["source"] == "/syncs/1"
    assert first["type"] == "sync.run.queued"
    assert first["datacontenttype"] == "application/json"
    assert first["data"]["syncId"] == "1"
    # Runs may overlap (one sends from memory, another what the store holds): one run's events.
    events = await read_topic(e2e.kafka, e2e.status_topic, 8)
    run_id = first["data"]["id"]
    types = [
        body["type"]
        for body in (orjson.loads(e.value) for e in events)
        if body["data"]["id"] == run_id
    ]
    assert types == [
        "sync.run.queued",
        "sync.run.processing",
        "sync.run.reporting",
        "sync.run.success",
    ]

    service = e2e.services[0]
    assert (
        await service.metric(
            "sync_rows_delivered_total",
            {"destination_type": "webhook", "op": "added", "outcome": "delivered"},
        )
        == 4
    )
    assert await service.metric("sync_event_to_delivery_seconds_count") >= 1


async def test_poison_events_go_to_the_dlq_and_later_events_flow(e2e: Harness) -> None:
    await e2e.service()
    await e2e.produce(b"{not json")
    await e2e.produce({"modelId": "1", "op": "explode", "rows": []})
    await e2e.produce({"modelId": "2", "op": "upsert", "rows": []}, key=b"1")
    await e2e.event("upsert", [user(1)])
    await e2e.receiver.wait_rows(1)

    dead = await read_topic(e2e.kafka, e2e.dlq_topic, 3)
    assert dead[0].value == b"{not json"
    headers = [dict(d.headers) for d in dead]
    for h in headers:
        assert set(h) >= {
            "error.class",
            "error.message",
            "original.topic",
            "original.partition",
            "original.offset",
        }
        assert h["original.topic"] == e2e.events_topic.encode()
    assert [h["original.offset"] for h in headers] == [b"0", b"1", b"2"]
    assert b"JSON" in headers[0]["error.message"]
    assert b"op" in headers[1]["error.message"]
    assert b"modelId" in headers[2]["error.message"]
    service = e2e.services[0]
    assert await service.metric("sync_events_invalid_total", {"reason": "schema"}) == 1


async def test_restart_resends_nothing_and_new_rows_flow(e2e: Harness) -> None:
    service = await e2e.service()
    await e2e.event("upsert", [user(1), user(2)])
    await e2e.receiver.wait_rows(2)

    started = time.monotonic()
    assert await service.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10

    # The same rows again while the service is down, plus one new row.
    await e2e.event("upsert", [user(1), user(2), user(3)])
    await e2e.service()
    await e2e.receiver.wait_rows(3)
    await e2e.event("upsert", [user(4)])
    await e2e.receiver.wait_rows(4)
    await asyncio.sleep(0.5)
    assert e2e.receiver.ops() == [("added", "1"), ("added", "2"), ("added", "3"), ("added", "4")]


async def test_refused_batch_stays_pending_and_goes_in_a_later_run(e2e: Harness) -> None:
    e2e.receiver.replies = [(400, {"message": "schema mismatch"}, {})]
    service = await e2e.service()
    await e2e.event("upsert", [user(1)])
    # First attempt refused; the continuous sync retries the row on a later run.
    await e2e.receiver.wait_rows(1)
    assert len(e2e.receiver.requests) == 2
    assert e2e.receiver.ops() == [("added", "1")]
    await wait_for(
        lambda: service.metric("sync_runs_total", {"status": "warning"}), what="a warning run"
    )


async def test_503_then_200_delivers_once_it_recovers(e2e: Harness) -> None:
    e2e.receiver.replies = [(503, {}, {}), (503, {}, {"Retry-After": "1"})]
    await e2e.service()
    await e2e.event("upsert", [user(1), user(2)])
    await e2e.receiver.wait_rows(2)
    assert len(e2e.receiver.requests) == 3
    assert sorted(e2e.receiver.ops()) == [("added", "1"), ("added", "2")]


async def test_invalid_resources_file_exits_2_naming_file_and_field(e2e: Harness) -> None:
    bad = resources(e2e.receiver.url)
    bad["syncs"][0]["schedule"] = {
        "type": "interval",
        "schedule": {"interval": {"quantity": 5, "unit": "year"}},
    }
    e2e.write_resources(bad)
    proc = await asyncio.create_subprocess_exec(
        SYNC_SERVICE, "serve", env=e2e.env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    message = err.decode()
    assert str(e2e.config_file) in message
    assert "syncs[0].schedule" in message


async def test_a_flood_of_invalid_events_raises_the_alarm_not_the_service(e2e: Harness) -> None:
    e2e.env["SYNC_DLQ_ALERT_WINDOW"] = "100"
    service = await e2e.service()
    for i in range(80):
        await e2e.produce(b"garbage %d" % i)

    await wait_for(
        lambda: service.metric("sync_dlq_alarm", {"topic": e2e.events_topic}),
        what="the DLQ alarm",
    )
    assert "of recent events are invalid" in service.log()
    async with aiohttp.ClientSession() as session, session.get(f"{service.base}/readyz") as r:
        assert r.status == 200
    await e2e.event("upsert", [user(1)])
    await e2e.receiver.wait_rows(1)


async def test_a_run_cut_short_by_sigterm_is_interrupted_and_its_rows_go_next_time(
    e2e: Harness,
) -> None:
    e2e.env["SYNC_SHUTDOWN_GRACE_SECONDS"] = "1"
    e2e.receiver.delay = 60.0  # the endpoint hangs
    service = await e2e.service()
    await e2e.event("upsert", [user(1), user(2)])
    await wait_for(lambda: len(e2e.receiver.requests) >= 1, what="a delivery to start")
    started = time.monotonic()
    assert await service.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    statuses = [
        orjson.loads(r.value)["type"] for r in await read_topic(e2e.kafka, e2e.status_topic, 3)
    ]
    assert statuses[-1] == "sync.run.interrupted"

    e2e.receiver.delay = 0.0
    await e2e.service()
    rows = await e2e.receiver.wait_rows(2)
    assert sorted(r["key"] for r in rows) == ["1", "2"]


async def test_a_closed_snapshot_removes_the_keys_it_lacks(e2e: Harness) -> None:
    await e2e.service()
    await e2e.event("upsert", [user(1), user(2), user(3), user(4)])
    await e2e.receiver.wait_rows(4)
    # A full copy of the model in two messages: 2 and 4 are gone, 3 changed, 5 is new.
    await e2e.event("snapshot", [user(1), user(3, "three@example.com")], snapshotId="s-1")
    await asyncio.sleep(0.5)
    assert len(e2e.receiver.rows) == 5  # the open snapshot removed nothing
    await e2e.event("snapshot", [user(5)], snapshotId="s-1", last=True)
    await e2e.receiver.wait_rows(8)
    await asyncio.sleep(0.3)
    assert sorted(e2e.receiver.ops()[4:]) == [
        ("added", "5"),
        ("changed", "3"),
        ("removed", "2"),
        ("removed", "4"),
    ]


async def test_secrets_never_reach_the_log(e2e: Harness) -> None:
    secrets = ["hmac-secret-value-1", "header-secret-value-2", "api-token-value-3"]
    data = resources(e2e.receiver.url, secret=secrets[0], headers={"X-Api-Key": secrets[1]})
    e2e.write_resources(data)
    e2e.env["SYNC_API_TOKENS"] = f"{secrets[2]}=1"
    e2e.env["SYNC_LOG_LEVEL"] = "DEBUG"
    e2e.receiver.replies = [(401, {"message": "bad key"}, {})]
    service = await e2e.service()
    await e2e.event("upsert", [user(1)])
    async with aiohttp.ClientSession() as session:
        for token in (secrets[2], "wrong-token-value"):
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{service.base}/api/v1/destinations/1", headers=headers) as r:
                body = await r.text()
                assert all(s not in body for s in secrets)
    await wait_for(lambda: service.metric("sync_runs_total", {"status": "failed"}), what="a run")
    assert await service.stop() == 0
    log = service.log_path.read_text()
    assert "HTTP 401" in log  # the log did record the failure, just not the secrets
    for secret in secrets:
        assert secret not in log
