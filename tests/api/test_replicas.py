"""Two replicas of the service on one PostgreSQL store (in this process, real broker): a
trigger or cancel sent to the replica that does not run the sync takes effect."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.app import build_app
from service.config import Settings
from tests.api.conftest import POSTGRES_URL, TOKENS, Service, _postgres_schema
from tests.api.test_api import make_catalog, run_status
from tests.support import Receiver, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def replicas(kafka_bootstrap: str, uid: str) -> AsyncIterator[tuple[Service, Service]]:
    schema = f"replicas_{uid}"
    try:
        await _postgres_schema(schema)
    except Exception as exc:
        pytest.fail(f"no PostgreSQL at {POSTGRES_URL} ({exc!r}); run `make pg-up`")
    async with AsyncExitStack() as stack:
        stack.push_async_callback(_postgres_schema, schema, drop=True)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        stack.push_async_callback(producer.stop)
        services = []
        for _ in range(2):
            settings = Settings(
                kafka_bootstrap_servers=kafka_bootstrap,
                events_topics=[f"rep-events-{uid}"],
                status_topic=f"rep-status-{uid}",
                dlq_topic=f"rep-dlq-{uid}",
                consumer_group=f"rep-{uid}",
                database_url=f"{POSTGRES_URL}?search_path={schema}",
                egress_allow=["127.0.0.1/32"],
                shutdown_grace_seconds=0.5,
            )
            runner = web.AppRunner(build_app(settings, None, TOKENS), handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            # Port 0: the server picks a free port, which no other process can take meanwhile.
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            base = f"http://127.0.0.1:{port}"
            services.append(Service(base, session, producer, settings.events_topics[0], settings))
        yield services[0], services[1]


async def pending_rows(service: Service, sync_id: str) -> int:
    _, body = await service.one.call("GET", f"/syncs/{sync_id}/rows", status="pending")
    return len(body["data"])


async def test_trigger_and_cancel_reach_the_replica_that_runs_the_sync(
    replicas: tuple[Service, Service], receiver: Receiver
) -> None:
    a, b = replicas
    sync_id = await make_catalog(a, receiver.url)
    receiver.delay = 30.0  # the first delivery hangs: B holds the sync while it lasts
    await a.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    await wait_for(lambda: _at_least(pending_rows(a, sync_id), 1), what="the row pending")

    _, first = await b.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    await wait_for(lambda: len(receiver.requests) == 1, what="B's run to start delivering")
    assert await run_status(a, sync_id, first["id"], "processing")

    # A does not run the sync: its trigger and cancel go through the store to B.
    status, second = await a.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    assert status == 200 and second["id"] != first["id"]
    status, run = await a.one.call("POST", f"/syncs/{sync_id}/runs/{second['id']}/cancel")
    assert status == 200 and run["status"] in ("queued", "cancelled")
    await wait_for(lambda: run_status(a, sync_id, second["id"], "cancelled"), what="queued cancel")

    _, third = await a.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    receiver.delay = 0.0
    status, _ = await a.one.call("POST", f"/syncs/{sync_id}/runs/{first['id']}/cancel")
    assert status == 200
    await wait_for(lambda: run_status(a, sync_id, first["id"], "cancelled"), what="running cancel")
    # The cancelled run sent nothing: its row stays pending and goes in A's trigger.
    await wait_for(lambda: run_status(b, sync_id, third["id"], "success"), what="A's trigger")
    assert [r["key"] for r in receiver.rows] == ["1"]
    assert await pending_rows(a, sync_id) == 0


async def _at_least(count: object, value: int) -> bool:
    return await count >= value  # type: ignore[misc,operator]
