"""The catalog through the API and through the resources file, on both stores: the same file
applied both ways leaves the same store; and inputs that once answered 500 answer 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.api.auth import TokenTable
from service.api.http import CATALOG, DESTINATION_CONTEXT, STORE, TOKENS, api_middleware
from service.api.routes import add_api_routes
from service.app import open_store
from service.catalog import Catalog
from service.config import Settings
from service.core.models import Destination, Model, Source, Sync
from service.destinations.registry import DestinationContext
from service.resources import ResourcesError, apply_resources, parse_resources
from service.store.base import Store
from tests.api.conftest import (
    POSTGRES_URL,
    Api,
    _postgres_schema,
    catalog_for,
)
from tests.api.conftest import (
    TOKENS as TOKEN_TABLE,
)

KINDS = (Source, Model, Destination, Sync)


@dataclass
class Side:
    """One store with the API in front of it."""

    store: Store
    catalog: Catalog
    api: Api
    two: Api
    server: TestServer


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, uid: str
) -> AsyncIterator[tuple[Side, Side]]:
    """Two empty stores of one kind, each behind the API (no pipeline: nothing here runs)."""
    schemas = [f"cat_{uid}_a", f"cat_{uid}_b"]
    async with aiohttp.ClientSession() as session, contextlib.AsyncExitStack() as stack:
        sides = []
        for n, schema in enumerate(schemas):
            if request.param == "postgres":
                await _postgres_schema(schema)
                stack.push_async_callback(_postgres_schema, schema, drop=True)
                url = f"{POSTGRES_URL}?search_path={schema}"
            else:
                url = f"sqlite:///{tmp_path / f'store-{n}.db'}"
            settings = Settings(
                database_url=url,
                kafka_bootstrap_servers="own-broker:9092",
                events_topics=["model-changes"],
            )
            store = open_store(settings)
            await store.open()
            stack.push_async_callback(store.close)
            catalog = catalog_for(settings, store)
            app = web.Application(middlewares=[api_middleware])
            app[STORE] = store
            app[CATALOG] = catalog
            app[TOKENS] = TokenTable(TOKEN_TABLE)
            app[DESTINATION_CONTEXT] = DestinationContext(settings.kafka_bootstrap_servers)
            add_api_routes(app, dict)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            stack.push_async_callback(server.close)
            base = str(server.make_url("")).rstrip("/")
            sides.append(
                Side(
                    store,
                    catalog,
                    Api(base, session, "token-workspace-one"),
                    Api(base, session, "token-workspace-two"),
                    server,
                )
            )
        yield sides[0], sides[1]


RESOURCES: dict[str, Any] = {
    "workspaceId": "1",
    "sources": [{"id": "1", "name": "orders", "slug": "orders", "configuration": {"topic": "o"}}],
    "models": [
        {"id": "1", "name": "users", "slug": "users", "primaryKey": "id"},
        {"id": "2", "name": "orders", "slug": "orders", "primaryKey": "oid", "sourceId": "1"},
    ],
    "destinations": [
        {
            "id": "1",
            "name": "crm",
            "slug": "crm",
            "type": "webhook",
            "configuration": {
                "url": "http://example.com/hook",
                "secret": "hmac-secret",
                "headers": {"X-Key": "header-secret"},
            },
        },
        {
            "id": "2",
            "name": "bus",
            "slug": "bus",
            "type": "kafka",
            "configuration": {"topic": "ws-1.orders", "removedAs": "tombstone"},
        },
    ],
    "syncs": [
        {
            "id": "1",
            "slug": "users-to-crm",
            "modelId": "1",
            "destinationId": "1",
            "schedule": {"type": "continuous", "schedule": {"lingerMs": 50}},
            "configuration": {
                "mode": "mirror",
                "mappings": [
                    {"from": "id", "to": "id"},
                    {"type": "template", "to": "name", "template": "{{ first }} {{ last }}"},
                ],
            },
        },
        {
            "id": "2",
            "slug": "orders-to-bus",
            "modelId": "2",
            "destinationId": "2",
            "disabled": True,
            "schedule": {"type": "manual"},
            "configuration": {"mappings": [{"from": "total", "to": "amount"}]},
        },
    ],
}

_SERVER_TIMES = {"created_at", "updated_at"}


async def snapshot(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Everything the store holds of the catalog, less the times it was written."""
    return {
        kind.__name__: [
            i.model_dump(mode="json", exclude=_SERVER_TIMES) for i in await store.list(kind)
        ]
        for kind in KINDS
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "resources.json"
    path.write_bytes(orjson.dumps(data))
    return path


async def post_all(api: Api, data: dict[str, Any]) -> None:
    for name in ("sources", "models", "destinations", "syncs"):
        for entry in data.get(name, []):
            body = {k: v for k, v in entry.items() if k != "id"}
            status, created = await api.call("POST", f"/{name}", body)
            assert status == 200, created
            assert created["id"] == entry["id"]


async def test_one_resources_file_applied_through_the_api_and_the_file_leaves_equal_stores(
    stores: tuple[Side, Side], tmp_path: Path
) -> None:
    by_file, by_api = stores
    path = write(tmp_path, RESOURCES)
    await apply_resources(by_file.catalog, await asyncio.to_thread(parse_resources, path), path)
    await post_all(by_api.api, RESOURCES)
    assert await snapshot(by_file.store) == await snapshot(by_api.store)
    assert (await by_file.store.get(Destination, "1")).configuration["secret"] == "hmac-secret"

    # The second version of the file sends the masked secrets back, as a client that read them
    # through the API would; both ways keep the stored secrets.
    _, shown = await by_api.api.call("GET", "/destinations/1")
    assert shown["configuration"]["secret"] == "********"
    changed = {**shown["configuration"], "batchSize": 10}
    second = orjson.loads(orjson.dumps(RESOURCES))
    second["destinations"][0]["configuration"] = changed
    second["models"][0]["name"] = "people"
    path = write(tmp_path, second)
    await apply_resources(by_file.catalog, await asyncio.to_thread(parse_resources, path), path)
    status, _ = await by_api.api.call("PATCH", "/destinations/1", {"configuration": changed})
    assert status == 200
    status, _ = await by_api.api.call("PATCH", "/models/1", {"name": "people"})
    assert status == 200
    after = await snapshot(by_file.store)
    assert after == await snapshot(by_api.store)
    [crm, _bus] = after["Destination"]
    assert crm["configuration"]["secret"] == "hmac-secret"
    assert crm["configuration"]["headers"] == {"X-Key": "header-secret"}
    assert crm["configuration"]["batchSize"] == 10


async def test_an_unchanged_file_applied_again_changes_nothing(
    stores: tuple[Side, Side], tmp_path: Path
) -> None:
    by_file, _ = stores
    path = write(tmp_path, RESOURCES)
    await apply_resources(by_file.catalog, await asyncio.to_thread(parse_resources, path), path)
    before = [i.updated_at for kind in KINDS for i in await by_file.store.list(kind)]
    await apply_resources(by_file.catalog, await asyncio.to_thread(parse_resources, path), path)
    assert [i.updated_at for kind in KINDS for i in await by_file.store.list(kind)] == before


@pytest.mark.parametrize(
    ("name", "index", "entry", "field"),
    [
        ("sources", 0, {"configuration": {"topic": "sync-dlq"}}, "configuration.topic"),
        ("destinations", 1, {"configuration": {"topic": "elsewhere"}}, "configuration.topic"),
        ("models", 1, {"sourceId": "9"}, "sourceId"),
        ("syncs", 0, {"modelId": "9"}, "modelId"),
    ],
)
async def test_the_file_and_the_api_refuse_alike(
    stores: tuple[Side, Side],
    tmp_path: Path,
    name: str,
    index: int,
    entry: dict[str, Any],
    field: str,
) -> None:
    by_file, by_api = stores
    data = orjson.loads(orjson.dumps(RESOURCES))
    data[name][index].update(entry)
    path = write(tmp_path, data)
    with pytest.raises(ResourcesError) as caught:
        await apply_resources(by_file.catalog, await asyncio.to_thread(parse_resources, path), path)
    with pytest.raises(AssertionError):
        await post_all(by_api.api, data)
    body = {k: v for k, v in data[name][index].items() if k != "id"}
    status, answer = await by_api.api.call("POST", f"/{name}", body)
    assert status == 422
    [(api_field, reason)] = answer["details"].items()
    assert api_field == field
    assert str(caught.value) == f"{path}: {name}[{index}].{field}: {reason}"


# --- every input answers 4xx ----------------------------------------------------------------


async def test_times_without_a_timezone_are_refused(
    stores: tuple[Side, Side], tmp_path: Path
) -> None:
    side, _ = stores
    await post_all(side.api, RESOURCES)
    for path in ("/syncs", "/syncs/1/runs"):
        for name in ("after", "before"):
            status, body = await side.api.call("GET", path, **{name: "2024-01-01T00:00:00"})
            assert status == 422, (path, name)
            assert name in body["details"]
            status, _ = await side.api.call("GET", path, **{name: "2024-01-01T00:00:00Z"})
            assert status == 200


async def test_ids_out_of_range_answer_404_or_422(stores: tuple[Side, Side]) -> None:
    side, _ = stores
    await post_all(side.api, RESOURCES)
    huge = "9223372036854775808"
    status, body = await side.api.call("GET", "/syncs/1/runs", runId=huge)
    assert status == 422
    assert "runId" in body["details"]
    for path in (f"/syncs/{huge}", f"/models/{huge}", f"/syncs/1/runs/{huge}/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        status, body = await side.api.call(method, path)
        assert status == 404, path
    status, body = await side.api.call("GET", "/syncs", modelId="99999999999999999999")
    assert status == 422
    status, body = await side.api.call("POST", "/syncs/trigger", {"syncId": huge})
    assert status == 422


async def test_source_topics_through_the_api(stores: tuple[Side, Side]) -> None:
    side, _ = stores
    body = {"name": "o", "slug": "o", "configuration": {"topic": "orders-cdc"}}
    assert (await side.api.call("POST", "/sources", body))[0] == 200
    status, answer = await side.two.call("POST", "/sources", body)
    assert status == 409
    assert set(answer["details"]) == {"configuration.topic"}
    for topic in ("sync-status", "sync-dlq", "model-changes"):
        taken = {**body, "configuration": {"topic": topic}}
        status, answer = await side.two.call("POST", "/sources", taken)
        assert status == 422, topic
        assert set(answer["details"]) == {"configuration.topic"}
    bad = {**body, "configuration": {"topic": "t", "format": "avro"}}
    status, answer = await side.api.call("POST", "/sources", bad)
    assert status == 422
    assert set(answer["details"]) == {"configuration.format"}


@pytest.mark.parametrize(
    ("type_name", "configuration", "field"),
    [
        ("kafka", {"topic": "t", "bootstrapServers": "a:b:c"}, "configuration.bootstrapServers"),
        ("kafka", {"topic": "t", "bootstrapServers": "h:99999"}, "configuration.bootstrapServers"),
        (
            "kafka",
            {"topic": "t", "bootstrapServers": "h:1", "sslCafile": "/nonexistent/ca.pem"},
            "configuration.sslCafile",
        ),
        (
            "webhook",
            {"url": "http://example.com/", "headers": {"X-A": "v\r\nX-B: secret-in-header"}},
            "configuration.headers.X-A",
        ),
        ("kafka", {"topic": "sync-status"}, "configuration.topic"),
    ],
)
async def test_destination_configurations_the_test_route_would_trip_on_are_refused(
    stores: tuple[Side, Side], type_name: str, configuration: dict[str, Any], field: str
) -> None:
    side, _ = stores
    body = {"name": "d", "slug": "d", "type": type_name, "configuration": configuration}
    status, answer = await side.api.call("POST", "/destinations", body)
    assert status == 422
    assert set(answer["details"]) == {field}
    assert "secret-in-header" not in orjson.dumps(answer).decode()


async def test_the_test_route_answers_a_planted_bad_configuration_without_failing(
    stores: tuple[Side, Side],
) -> None:
    side, _ = stores
    planted = [
        ("kafka", {"topic": "t", "securityProtocol": "SSL", "sslCafile": "/nonexistent/ca.pem"}),
        ("webhook", {"url": "http://127.0.0.1:9/", "headers": {"X-A": "tok-987\r\nX: y"}}),
    ]
    for n, (type_name, configuration) in enumerate(planted, start=1):
        await side.store.upsert(
            Destination(
                id=str(n), name="d", slug=f"d{n}", type=type_name, configuration=configuration
            )
        )
        status, answer = await side.api.call("POST", f"/destinations/{n}/test")
        assert status == 200, answer
        assert answer["ok"] is False
        assert "tok-987" not in orjson.dumps(answer).decode()


async def test_bad_http_framing_is_one_log_line(
    stores: tuple[Side, Side], caplog: pytest.LogCaptureFixture
) -> None:
    side, _ = stores
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    reader, writer = await asyncio.open_connection(side.server.host, side.server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization Bearer tok-leak\r\n\r\n")
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert b" 400 " in status_line
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1
    [record] = records
    assert record.exc_info is None
    assert record.levelno == logging.WARNING
    assert "\n" not in record.getMessage()
    assert "tok-leak" not in record.getMessage()
