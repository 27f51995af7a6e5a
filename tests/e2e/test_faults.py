"""Faults the real `sync-service serve` process must ride out: rows it can't encode, events
from another workspace's topic, its own topics named as sources, a broker that isn't there."""

from __future__ import annotations

import contextlib
import json

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from service.app import open_store
from service.config import Settings
from service.core.models import Source
from tests.e2e.conftest import Harness, ServiceProcess, free_port, resources
from tests.e2e.test_service import read_topic, user
from tests.support import wait_for

pytestmark = pytest.mark.kafka

TOKEN = "e2e-token-workspace"


async def test_a_row_that_cannot_be_encoded_is_rejected_alone_and_the_stream_goes_on(
    e2e: Harness,
) -> None:
    e2e.env["SYNC_API_TOKENS"] = f"{TOKEN}=1"
    service = await e2e.service()
    # An integer beyond 64 bits, NaN and a key too long: each rejects its own row only.
    await e2e.produce(
        b'{"modelId": "1", "op": "upsert", "rows": ['
        b'{"id": 7, "email": 123456789012345678901234567890, "first": "A", "last": "B"},'
        b'{"id": 8, "email": NaN, "first": "A", "last": "B"},'
        b'{"id": "' + b"k" * 600 + b'", "email": "x@example.com"},'
        b'{"id": 9, "email": "ok@example.com", "first": "A", "last": "B"}]}'
    )
    await e2e.event("upsert", [user(10)])
    rows = await e2e.receiver.wait_rows(2)
    assert sorted(r["key"] for r in rows) == ["10", "9"]

    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{service.base}/api/v1/syncs/1/rows?status=rejected"

    async def rejected() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
            assert r.status == 200
            return (await r.json())["data"]

    await wait_for(lambda: _len_at_least(rejected, 3), what="three rejected rows")
    reasons = sorted(str(r["error"]) for r in await rejected())
    assert any("64-bit" in r for r in reasons)
    assert any("NaN or infinite" in r for r in reasons)
    assert any("characters" in r for r in reasons)
    assert await service.metric("sync_rows_rejected_total", {"reason": "unencodable"}) == 1
    assert await service.metric("sync_rows_rejected_total", {"reason": "non_finite"}) == 1
    assert await service.metric("sync_rows_rejected_total", {"reason": "key_too_long"}) == 1


async def _len_at_least(read: object, n: int) -> bool:
    return len(await read()) >= n  # type: ignore[operator]


async def test_events_reach_only_the_models_of_the_workspace_owning_their_topic(
    e2e: Harness,
) -> None:
    own_topic = f"{e2e.events_topic}-ws2"
    await _create_topic(e2e.kafka, own_topic)
    data = resources(e2e.receiver.url)
    data["workspaceId"] = "2"  # model 1 and sync 1 belong to workspace 2
    e2e.write_resources(data)
    await _plant_sources(e2e, [("1", own_topic, "2")])
    service = await e2e.service()
    # The default topic belongs to workspace 1: model 1 is not one of its models.
    await e2e.event("upsert", [user(1)])
    await wait_for(
        lambda: service.metric("sync_events_unrouted_total"), what="the event counted unrouted"
    )
    producer = AIOKafkaProducer(bootstrap_servers=e2e.kafka, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            own_topic, b'{"modelId": "1", "op": "upsert", "rows": [{"id": 2}]}', key=b"1"
        )
    finally:
        await producer.stop()
    rows = await e2e.receiver.wait_rows(1)
    assert [r["key"] for r in rows] == ["2"]
    assert await service.metric("sync_events_unrouted_total") == 1


async def test_the_service_never_consumes_its_own_dlq_even_named_by_a_source(
    e2e: Harness,
) -> None:
    await _plant_sources(e2e, [("1", e2e.dlq_topic, "1"), ("2", e2e.status_topic, "2")])
    service = await e2e.service()
    await e2e.produce(b"not json")
    await e2e.event("upsert", [user(1)])
    await e2e.receiver.wait_rows(1)
    dead = await read_topic(e2e.kafka, e2e.dlq_topic, 2, timeout=3)
    assert len(dead) == 1  # sent once, never read back and sent again
    assert dict(dead[0].headers)["error.class"] == b"InvalidEvent"
    assert "not consuming" in service.log()


async def test_http_answers_before_kafka_does(e2e: Harness) -> None:
    e2e.env["SYNC_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"  # nothing listens
    service = ServiceProcess(e2e.env, e2e.tmp_path / "service.log")
    e2e.services.append(service)
    with contextlib.suppress(AssertionError):  # never ready, as it should be
        await service.start(timeout=8)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{service.base}/healthz") as r:
            assert r.status == 200
        async with s.get(f"{service.base}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"]["consumer"] is False
        async with s.get(f"{service.base}/metrics") as r:
            assert r.status == 200
    assert await service.stop() == 0


async def _create_topic(kafka: str, topic: str, configs: dict[str, str] | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1, topic_configs=configs or {})]
        )
    finally:
        await admin.close()


async def _plant_sources(e2e: Harness, sources: list[tuple[str, str, str]]) -> None:
    """Sources (id, topic, workspace) written to the store before the service starts."""
    store = open_store(Settings(database_url=e2e.env["SYNC_DATABASE_URL"]))
    await store.open()
    try:
        for id, topic, workspace in sources:
            await store.upsert(
                Source(
                    id=id,
                    name=f"source {id}",
                    slug=f"source-{id}",
                    workspace_id=workspace,
                    configuration={"topic": topic},
                )
            )
    finally:
        await store.close()


async def test_a_second_replica_joining_mid_stream_loses_no_row(e2e: Harness) -> None:
    """The first replica finishes and commits its batch in flight before its partitions move;
    every key arrives, whoever holds its partition when."""
    first = await e2e.service()
    for i in range(0, 200, 10):
        await e2e.produce(
            {"modelId": "1", "op": "upsert", "rows": [user(k) for k in range(i, i + 10)]}
        )
    e2e.env["SYNC_HTTP_PORT"] = "0"
    e2e.env["SYNC_DATABASE_URL"] = f"sqlite:///{e2e.tmp_path / 'second.db'}"
    second = ServiceProcess(e2e.env, e2e.tmp_path / "second.log")
    e2e.services.append(second)
    await second.start()
    for i in range(200, 400, 10):
        await e2e.produce(
            {"modelId": "1", "op": "upsert", "rows": [user(k) for k in range(i, i + 10)]}
        )

    def keys() -> set[str]:
        return {str(r["key"]) for r in e2e.receiver.rows}

    await wait_for(
        lambda: len(keys()) == 400,
        timeout=60,
        what=f"all 400 keys; first:\n{first.log()}\nsecond:\n{second.log()}",
    )
    assert "offset commit failed" not in first.log()


async def test_a_dlq_that_refuses_pauses_the_consumer_until_it_accepts(e2e: Harness) -> None:
    """The broker refuses the dead letter (the DLQ topic takes no message that large): the
    consumer waits, /readyz answers 503, the process stays up; once the DLQ accepts, the dead
    letter lands and the event behind it is delivered, none skipped."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    await _create_topic(e2e.kafka, e2e.dlq_topic, {"max.message.bytes": "200"})
    admin = AIOKafkaAdminClient(bootstrap_servers=e2e.kafka)
    await admin.start()
    try:
        service = await e2e.service()
        await e2e.produce(b"x" * 1000)  # not JSON, and too large for the DLQ as it is
        await e2e.event("upsert", [user(1)])

        async def not_ready() -> bool:
            async with aiohttp.ClientSession() as s, s.get(f"{service.base}/readyz") as r:
                return r.status == 503

        await wait_for(not_ready, what="/readyz 503 while the DLQ refuses")
        assert e2e.receiver.rows == []  # held back behind the dead letter, not skipped
        await wait_for(lambda: "refused 1 records" in service.log(), what="the refusal logged")
        assert service.proc is not None and service.proc.returncode is None

        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    e2e.dlq_topic,
                    configs={"max.message.bytes": "1048588"},
                )
            ]
        )
        rows = await e2e.receiver.wait_rows(1, timeout=60)
        assert [r["key"] for r in rows] == ["1"]
        [dead] = await read_topic(e2e.kafka, e2e.dlq_topic, 1)
        assert dead.value == b"x" * 1000
        assert service.proc.returncode is None
    finally:
        await admin.close()


async def test_an_invalid_record_over_a_mebibyte_goes_to_the_dlq_whole(e2e: Harness) -> None:
    """A topic that takes 4 MiB messages carries an invalid one of 2 MiB: beyond Kafka's
    default request size, so a producer with the default could never dead-letter it and the
    consumer would wait for the DLQ for good. It lands in the DLQ (created by the service) as
    it arrived, and the event behind it is delivered."""
    await _create_topic(e2e.kafka, e2e.events_topic, {"max.message.bytes": str(4 << 20)})
    big = b"{" + b"x" * (2 << 20)  # not JSON
    producer = AIOKafkaProducer(bootstrap_servers=e2e.kafka, max_request_size=4 << 20)
    await producer.start()
    try:
        await producer.send_and_wait(e2e.events_topic, big, key=b"1")
    finally:
        await producer.stop()
    await e2e.event("upsert", [user(1)])
    service = await e2e.service()

    rows = await e2e.receiver.wait_rows(1, timeout=30)
    assert [r["key"] for r in rows] == ["1"]
    [dead] = await read_topic(e2e.kafka, e2e.dlq_topic, 1)
    assert dead.value == big
    assert dict(dead.headers)["error.class"] == b"InvalidEvent"
    assert "refused" not in service.log()


async def test_a_poison_corpus_interleaved_with_valid_events_costs_only_the_poison(
    e2e: Harness,
) -> None:
    e2e.env["SYNC_API_TOKENS"] = f"{TOKEN}=1"
    service = await e2e.service()
    dead_events = [
        b"not json",
        b"",
        b'{"modelId": "1", "op": "upsert", "rows": "not a list"}',
        b'{"modelId": "1", "op": "merge", "rows": []}',
        b'{"modelId": "1", "op": "upsert", "rows": [{"id": 1, "v": "\\ud800"}]}',
        b"[" * 10_000 + b"]" * 10_000,
    ]
    rejected_rows = [
        {"id": 7, "email": 123456789012345678901234567890},
        {"id": -(2**70), "email": "the key column is sent too, and JSON can't carry it"},
        {"id": {"nested": 1}, "email": "x"},
        {"id": [1], "email": "x"},
        {"email": "no key"},
    ]
    expected: set[str] = set()
    for i, raw in enumerate(dead_events):
        await e2e.produce(raw)
        await e2e.event("upsert", [user(100 + i)])
        expected.add(str(100 + i))
    await e2e.produce(b'{"modelId": "999", "op": "upsert", "rows": [{"id": 9}]}')  # no model
    rows = [*rejected_rows, user(200, "é" * 1000), user(201, "x" * (1 << 19))]
    await e2e.produce(json.dumps({"modelId": "1", "op": "upsert", "rows": rows}).encode())
    expected |= {"200", "201"}

    def keys() -> set[str]:
        return {str(r["key"]) for r in e2e.receiver.rows}

    await wait_for(lambda: keys() >= expected, timeout=60, what=f"keys {sorted(expected)}")
    dead = await read_topic(e2e.kafka, e2e.dlq_topic, len(dead_events) + 1)
    assert len(dead) == len(dead_events) + 1
    assert all(dict(d.headers)["error.class"] == b"InvalidEvent" for d in dead)
    await wait_for(lambda: service.metric("sync_rows_rejected_total"), what="rejected rows counted")
    assert await service.metric("sync_rows_rejected_total") == len(rejected_rows)
    assert service.proc is not None and service.proc.returncode is None
