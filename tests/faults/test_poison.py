"""A poison corpus interleaved with valid events: every valid row is delivered, every invalid
event is in the DLQ or rejected with its reason, and the process never restarts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from tests.faults.harness import Cluster, Mirror, TimedReceiver, figure

BIG = 123456789012345678901234567890
MB = 1_000_000


@dataclass
class Case:
    """`invalid`: must be in the DLQ or rejected. `either`: may also be delivered, but must be
    accounted for. `tag` finds the case in the rejected rows or the delivered data."""

    name: str
    raw: bytes
    expect: str
    tag: str
    #: Rows of the case that are valid and must be delivered: (key, data).
    valid: tuple[tuple[str, dict[str, Any]], ...] = ()
    #: The Kafka message key.
    key: bytes = b"1"


def event(rows: Any, **extra: Any) -> bytes:
    return orjson.dumps({"modelId": "1", "op": "upsert", "rows": rows, **extra})


def text(body: str) -> bytes:
    return body.encode()


def corpus() -> list[Case]:
    deep = "[" * 5000 + "]" * 5000
    nested = {"a": 1}
    for _ in range(60):
        nested = {"a": nested}
    return [
        Case(
            "int beyond 64 bits",
            text(f'{{"modelId":"1","op":"upsert","rows":[{{"id":"p-bigint","v":{BIG}}}]}}'),
            "invalid",
            "p-bigint",
        ),
        Case(
            "negative int beyond 64 bits",
            text(f'{{"modelId":"1","op":"upsert","rows":[{{"id":"p-negbig","v":-{BIG}}}]}}'),
            "invalid",
            "p-negbig",
        ),
        Case(
            "int key beyond 64 bits",
            text(f'{{"modelId":"1","op":"upsert","rows":[{{"id":{BIG},"v":"p-bigkey"}}]}}'),
            "either",
            "p-bigkey",
        ),
        Case(
            "one bad row among good ones",
            text(
                '{"modelId":"1","op":"upsert","rows":'
                f'[{{"id":"p-mixed-ok","v":"fine"}},{{"id":"p-mixed","v":{BIG}}}]}}'
            ),
            "invalid",
            "p-mixed",
            valid=(("p-mixed-ok", {"id": "p-mixed-ok", "v": "fine"}),),
        ),
        Case(
            "NaN",
            text('{"modelId":"1","op":"upsert","rows":[{"id":"p-nan","v":NaN}]}'),
            "invalid",
            "p-nan",
        ),
        Case(
            "Infinity",
            text('{"modelId":"1","op":"upsert","rows":[{"id":"p-inf","v":-Infinity}]}'),
            "invalid",
            "p-inf",
        ),
        Case(
            "float overflow",
            text('{"modelId":"1","op":"upsert","rows":[{"id":"p-1e400","v":1e400}]}'),
            "invalid",
            "p-1e400",
        ),
        Case(
            "invalid JSON",
            b'{"modelId":"1","op":"upsert","rows":[{"id":"p-json"',
            "invalid",
            "p-json",
        ),
        Case(
            "not UTF-8",
            b'{"modelId":"1","op":"upsert","rows":[{"id":"p-utf8","v":"\xff\xfe"}]}',
            "invalid",
            "p-utf8",
        ),
        Case(
            "invalid surrogate",
            text('{"modelId":"1","op":"upsert","rows":[{"id":"p-surrogate","v":"\\ud800x"}]}'),
            "invalid",
            "p-surrogate",
        ),
        Case("empty value", b"", "invalid", "p-blank"),
        Case("JSON null", b"null", "invalid", "p-jnull"),
        Case("JSON array", b"[1,2]", "invalid", "p-array"),
        Case(
            "deep nesting",
            text(f'{{"modelId":"1","op":"upsert","rows":[{{"id":"p-deep","v":{deep}}}]}}'),
            "invalid",
            "p-deep",
        ),
        Case("moderate nesting", event([{"id": "p-nest", "v": nested}]), "either", "p-nest"),
        Case(
            "1 MB string value", event([{"id": "p-mbvalue", "v": "x" * MB}]), "either", "p-mbvalue"
        ),
        Case(
            "1 MB string key",
            event([{"id": "p-mbkey" + "k" * MB, "v": "p-mbkey"}]),
            "either",
            "p-mbkey",
        ),
        Case("op of wrong type", event([{"id": "p-op", "v": 1}], op=5), "invalid", "p-op"),
        Case("unknown op", event([{"id": "p-badop", "v": 1}], op="merge"), "invalid", "p-badop"),
        Case("rows not a list", event("p-rows"), "invalid", "p-rows"),
        Case("rows of wrong type", event([1, "p-rowtype"]), "invalid", "p-rowtype"),
        Case(
            "modelId of wrong type",
            orjson.dumps({"modelId": 1, "op": "upsert", "rows": [{"id": "p-modelid", "v": 1}]}),
            "invalid",
            "p-modelid",
        ),
        Case(
            "modelId missing",
            orjson.dumps({"op": "upsert", "rows": [{"id": "p-nomodel"}]}),
            "invalid",
            "p-nomodel",
        ),
        Case("primary key missing", event([{"v": "p-nokey"}]), "invalid", "p-nokey"),
        Case("primary key null", event([{"id": None, "v": "p-nullkey"}]), "invalid", "p-nullkey"),
        Case(
            "mismatched key name", event([{"ID": "x", "v": "p-mismatch"}]), "invalid", "p-mismatch"
        ),
        Case("key an object", event([{"id": {"a": 1}, "v": "p-objkey"}]), "either", "p-objkey"),
        Case("key a list", event([{"id": [1, 2], "v": "p-listkey"}]), "either", "p-listkey"),
        Case("key a boolean", event([{"id": True, "v": "p-boolkey"}]), "either", "p-boolkey"),
        Case("key a float", event([{"id": 1.5, "v": "p-floatkey"}]), "either", "p-floatkey"),
        Case("key an empty string", event([{"id": "", "v": "p-emptykey"}]), "either", "p-emptykey"),
        Case(
            "delete without key",
            orjson.dumps({"modelId": "1", "op": "delete", "rows": [{"v": "p-delnokey"}]}),
            "invalid",
            "p-delnokey",
        ),
        Case(
            "a model that does not exist",
            orjson.dumps({"modelId": "999", "op": "upsert", "rows": [{"id": "p-nomodel", "v": 1}]}),
            "invalid",
            "p-nomodel",
        ),
    ]


def valid_rows() -> list[dict[str, Any]]:
    """Values that look odd but are valid JSON of a kind every destination can take."""
    return [
        {"id": "ok-maxint", "v": 2**63 - 1},
        {"id": "ok-minint", "v": -(2**63)},
        {"id": "ok-float", "v": 1.7976931348623157e308},
        {"id": "ok-nan-string", "v": "NaN"},
        {"id": "ok-inf-string", "v": "Infinity"},
        {"id": "ok-empty", "v": ""},
        {"id": "ok-unicode", "v": "Zürich 東京 🚀 \u0000 \u2028"},
        {"id": "ok-nested", "v": {"a": [1, {"b": None}], "c": [[], {}]}},
        {"id": "ok-bool", "v": False},
        {"id": "ok-null", "v": None},
        {"id": 0, "v": "zero key"},
        {"id": -1, "v": "negative key"},
    ]


async def read_dlq(kafka: str, topic: str, timeout: float = 10.0) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=16 << 20,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
            if not batch and records:
                break
    finally:
        await consumer.stop()
    return records


async def test_poison_corpus_between_valid_events(
    cluster: Cluster, receiver: TimedReceiver
) -> None:
    mirror = Mirror(receiver)
    service = await cluster.service()
    pid = service.pid
    offsets: dict[str, int] = {}
    good = valid_rows()
    cases = corpus()
    for i, case in enumerate(cases):
        await cluster.event("upsert", [{"id": f"ok-{i}", "v": i}])
        record = await cluster.produce(case.raw, key=case.key)
        offsets[case.tag] = record.offset
        for key, data in case.valid:
            cluster.model.state[key] = data
        if i < len(good):
            await cluster.event("upsert", [good[i]])
    if len(good) > len(cases):
        await cluster.event("upsert", good[len(cases) :])
    await cluster.event("upsert", [{"id": "ok-last", "v": "last"}])

    try:
        took = await mirror.converge(
            cluster.model, 90, "every valid row delivered", extra=lambda data: "p-" in str(data)
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.logs()}") from None

    dead = await read_dlq(cluster.servers.kafka, cluster.dlq_topic)
    in_dlq: dict[int, dict[str, bytes]] = {}
    for record in dead:
        headers = dict(record.headers)
        in_dlq[int(headers["original.offset"])] = headers
    rejected = (await service.api("GET", "/syncs/1/rows", status="rejected", limit=1000))["data"]
    rejected_text = [(orjson.dumps(r).decode(errors="replace"), r.get("error")) for r in rejected]
    delivered = {
        case.tag: data for case in cases for data in mirror.state.values() if case.tag in str(data)
    }

    unaccounted, reasonless, outcome, corrupted = [], [], {}, {}
    for case in cases:
        offset = offsets[case.tag]
        headers = in_dlq.get(offset)
        rejections = [why for body, why in rejected_text if case.tag in body]
        if headers is not None:
            outcome[case.name] = "dlq"
            if not headers.get("error.class") or not headers.get("error.message"):
                reasonless.append(case.name)
        elif rejections:
            outcome[case.name] = "rejected"
            if not all(rejections):
                reasonless.append(case.name)
        elif case.tag in delivered:
            outcome[case.name] = "delivered"
            if case.expect == "invalid":
                corrupted[case.name] = str(delivered[case.tag])[:80]
        else:
            unaccounted.append(case.name)
    figure(
        f"poison corpus: {len(cases)} cases among {len(cases) * 2 + len(good)} events, valid rows "
        f"converged {took:.2f}s after the last; "
        f"{sum(v == 'dlq' for v in outcome.values())} to the DLQ, "
        f"{sum(v == 'rejected' for v in outcome.values())} rejected, "
        f"{sum(v == 'delivered' for v in outcome.values())} delivered, "
        f"{len(unaccounted)} unaccounted {unaccounted}, {len(corrupted)} invalid but "
        f"delivered {corrupted}"
    )
    assert not unaccounted, f"neither in the DLQ nor rejected: {unaccounted} ({outcome})"
    assert not corrupted, f"invalid events delivered as if valid: {corrupted}"
    assert not reasonless, f"kept without a reason: {reasonless}"
    assert service.alive and service.pid == pid and len(cluster.services) == 1
    assert await service.readyz() == 200
