"""A live service (in this process, real broker, real store) and HTTP clients per workspace."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from service.app import build_app, build_catalog
from service.catalog import Catalog
from service.config import Settings
from service.store.base import Store

TOKENS = {"token-workspace-one": "1", "token-workspace-two": "2"}
DBT_SECRET = "dbt-webhook-secret"
POSTGRES_URL = os.environ.get(
    "SYNC_TEST_POSTGRES_URL", "postgresql://sync:sync@127.0.0.1:55432/sync"
)


class Api:
    def __init__(self, base: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self.base = base
        self.session = session
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, **query: Any
    ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers, "params": query or None}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, f"{self.base}/api/v1{path}", **kwargs) as r:
            text = await r.text()
            payload = await r.json(content_type=None) if text else None
            return r.status, payload


class Service:
    def __init__(
        self,
        base: str,
        session: aiohttp.ClientSession,
        producer: AIOKafkaProducer,
        topic: str,
        settings: Settings,
    ) -> None:
        self.base = base
        self.settings = settings
        self.session = session
        self.producer = producer
        self.topic = topic
        self.one = Api(base, session, "token-workspace-one")
        self.two = Api(base, session, "token-workspace-two")
        self.anonymous = Api(base, session, None)

    async def produce(self, event: dict[str, Any]) -> None:
        await self.producer.send_and_wait(
            self.topic, orjson.dumps(event), key=event["modelId"].encode()
        )

    async def metric_at_least(self, name: str, value: float) -> bool:
        async with self.session.get(f"{self.base}/metrics") as r:
            text = await r.text()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1]) >= value
        return False


def catalog_for(settings: Settings, store: Store) -> Catalog:
    """The catalog service as the composition root builds it from the settings."""
    return build_catalog(settings, store, None)


async def _postgres_schema(name: str, *, drop: bool = False) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        if drop:
            await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        else:
            await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def service(
    request: pytest.FixtureRequest, tmp_path: Path, kafka_bootstrap: str, uid: str
) -> AsyncIterator[Service]:
    schema = f"api_{uid}"  # a schema of its own: runs sharing the server never meet
    if request.param == "postgres":
        try:
            await _postgres_schema(schema)
        except Exception as exc:
            pytest.fail(f"no PostgreSQL at {POSTGRES_URL} ({exc!r}); run `make pg-up`")
        database_url = f"{POSTGRES_URL}?search_path={schema}"
    else:
        database_url = f"sqlite:///{tmp_path / 'store.db'}"
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        events_topics=[f"api-events-{uid}"],
        status_topic=f"api-status-{uid}",
        dlq_topic=f"api-dlq-{uid}",
        consumer_group=f"api-{uid}",
        database_url=database_url,
        api_max_body_bytes=64 * 1024,
        dbt_cloud_webhook_secret=DBT_SECRET,
        egress_allow=["127.0.0.1/32"],  # the receivers of these tests listen there
    )
    app = build_app(settings, None, TOKENS)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    # Port 0: the server picks a free port and is asked for it, so no other process can take it.
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Service(
                f"http://127.0.0.1:{port}", session, producer, settings.events_topics[0], settings
            )
    finally:
        await producer.stop()
        await runner.cleanup()
        if request.param == "postgres":
            await _postgres_schema(schema, drop=True)
