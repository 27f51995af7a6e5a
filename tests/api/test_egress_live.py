"""SSRF against the live service through runs as well as the test route: a name that resolves
to a refused address, and a redirect to one; the listeners there receive nothing and no row
counts as delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.app import build_app
from service.config import Settings
from tests.api.conftest import TOKENS, Service
from tests.api.test_isolation import workspace_catalog
from tests.support import Listener, Receiver, wait_for

pytestmark = pytest.mark.kafka


@pytest.fixture
async def strict(tmp_path: Path, kafka_bootstrap: str, uid: str) -> AsyncIterator[Service]:
    """The service with the default egress policy: loopback, 127.0.0.1 included, is refused."""
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        events_topics=[f"strict-events-{uid}"],
        status_topic=f"strict-status-{uid}",
        dlq_topic=f"strict-dlq-{uid}",
        consumer_group=f"strict-{uid}",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
    )
    runner = web.AppRunner(build_app(settings, None, TOKENS), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # the server picks a free port
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            yield Service(base, session, producer, settings.events_topics[0], settings)
    finally:
        await producer.stop()
        await runner.cleanup()


async def last_run(service: Service, sync_id: str) -> dict[str, Any] | None:
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs")
    finished = [r for r in runs["data"] if r["finishedAt"]]
    return finished[0] if finished else None


async def test_a_name_resolving_to_loopback_reaches_nothing_through_runs_or_the_test_route(
    strict: Service,
) -> None:
    listener = await Listener("127.0.0.1").start()
    try:
        url = f"http://localhost:{listener.port}/hook"  # a name: it passes when saved
        ids = await workspace_catalog(strict.one, url)
        status, check = await strict.one.call("POST", f"/destinations/{ids['destination']}/test")
        assert status == 200
        assert check["ok"] is False
        assert "egress policy" in check["error"]
        await strict.produce({"modelId": ids["model"], "op": "upsert", "rows": [{"id": 1}]})
        await wait_for(lambda: last_run(strict, ids["sync"]), what="a finished run")
        run = await last_run(strict, ids["sync"])
        assert run is not None
        assert run["status"] == "failed"
        assert run["successfulRows"]["addedCount"] == 0
        _, rows = await strict.one.call("GET", f"/syncs/{ids['sync']}/rows", status="failed")
        assert [r["key"] for r in rows["data"]] == ["1"]
        assert "egress policy" in rows["data"][0]["error"]
        assert listener.connections == 0
    finally:
        await listener.stop()


async def test_a_redirect_to_a_refused_address_is_not_followed_by_a_run(
    service: Service, receiver: Receiver
) -> None:
    try:
        listener = await Listener("127.0.0.2").start()
    except OSError:
        pytest.skip("127.0.0.2 is not available on this host")
    try:
        receiver.default = (307, {}, {"Location": f"http://{listener.netloc}/hook"})
        ids = await workspace_catalog(service.one, receiver.url)
        await service.produce({"modelId": ids["model"], "op": "upsert", "rows": [{"id": 1}]})
        await wait_for(lambda: last_run(service, ids["sync"]), what="a finished run")
        run = await last_run(service, ids["sync"])
        assert run is not None
        assert run["status"] == "failed"
        assert run["successfulRows"]["addedCount"] == 0
        _, rows = await service.one.call("GET", f"/syncs/{ids['sync']}/rows", status="failed")
        assert [r["key"] for r in rows["data"]] == ["1"]
        assert "307" in rows["data"][0]["error"]
        assert receiver.rows == []
        assert listener.connections == 0
    finally:
        await listener.stop()
