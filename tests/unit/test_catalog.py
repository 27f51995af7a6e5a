"""The catalog service over a real SQLite store: topics per workspace, Kafka destinations on the
service's own cluster, configuration limits, destination fields, secrets, the egress hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service.app import open_store
from service.catalog import Catalog, CatalogError, Conflicting, Invalid
from service.config import Settings
from service.core.models import Destination, Model, Source, Sync
from service.core.specs import (
    DestinationCreate,
    DestinationPatch,
    ModelCreate,
    SourceCreate,
    SourcePatch,
    SyncCreate,
    SyncPatch,
)
from service.store.base import Conflict, Store

OWN_CLUSTER = "broker-a:9092,broker-b:9092"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'store.db'}"))
    await store.open()
    yield store
    await store.close()


def make_catalog(store: Store, **kwargs: Any) -> Catalog:
    return Catalog(
        store,
        default_workspace="1",
        events_topics=["model-changes"],
        status_topic="sync-status",
        dlq_topic="sync-dlq",
        kafka_bootstrap_servers=OWN_CLUSTER,
        **kwargs,
    )


@pytest.fixture
def catalog(store: Store) -> Catalog:
    return make_catalog(store)


def source(topic: str, slug: str = "orders", **configuration: Any) -> Any:
    body = {"name": slug, "slug": slug, "configuration": {"topic": topic, **configuration}}
    return SourceCreate.model_validate(body)


def destination(type_name: str, configuration: dict[str, Any], slug: str = "d") -> Any:
    body = {"name": slug, "slug": slug, "type": type_name, "configuration": configuration}
    return DestinationCreate.model_validate(body)


async def refused(call: Any) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        await call
    return caught.value


# --- source topics belong to workspaces ---------------------------------------------------


async def test_a_topic_of_one_workspace_is_a_conflict_for_another(catalog: Catalog) -> None:
    await catalog.create(Source, "1", source("orders-cdc"))
    error = await refused(catalog.create(Source, "2", source("orders-cdc")))
    assert isinstance(error, Conflicting)
    assert set(error.details) == {"configuration.topic"}
    # The owner may name it again.
    await catalog.create(Source, "1", source("orders-cdc", slug="again"))


async def test_moving_a_source_onto_a_taken_topic_is_a_conflict(catalog: Catalog) -> None:
    await catalog.create(Source, "1", source("orders-cdc"))
    mine = await catalog.create(Source, "2", source("mine"))
    patch = SourcePatch.model_validate({"configuration": {"topic": "orders-cdc"}})
    error = await refused(catalog.update(Source, "2", mine.id, patch))
    assert isinstance(error, Conflicting)


@pytest.mark.parametrize("topic", ["sync-status", "sync-dlq"])
@pytest.mark.parametrize("workspace", ["1", "2"])
async def test_the_services_own_topics_are_no_source(
    catalog: Catalog, topic: str, workspace: str
) -> None:
    error = await refused(catalog.create(Source, workspace, source(topic)))
    assert isinstance(error, Invalid)
    assert set(error.details) == {"configuration.topic"}


async def test_the_default_workspaces_topics_are_no_source_of_another(catalog: Catalog) -> None:
    error = await refused(catalog.create(Source, "2", source("model-changes")))
    assert isinstance(error, Invalid)
    assert "default workspace" in error.details["configuration.topic"]
    assert (await catalog.create(Source, "1", source("model-changes"))).workspace_id == "1"


async def test_a_topic_reserved_for_another_workspaces_destinations_is_no_source(
    catalog: Catalog,
) -> None:
    error = await refused(catalog.create(Source, "3", source("ws-2.orders")))
    assert isinstance(error, Invalid)
    await catalog.create(Source, "2", source("ws-2.orders"))


async def test_a_source_format_is_sync_or_debezium(catalog: Catalog) -> None:
    plain = await catalog.create(Source, "1", source("a", slug="a"))
    assert plain.configuration == {"topic": "a"}
    debezium = await catalog.create(Source, "1", source("b", slug="b", format="debezium"))
    assert debezium.configuration == {"topic": "b", "format": "debezium"}
    with pytest.raises(ValidationError) as caught:
        source("c", slug="c", format="avro")
    assert [e["loc"] for e in caught.value.errors()] == [("configuration", "format")]


# --- kafka destinations on the service's own cluster --------------------------------------


@pytest.mark.parametrize("servers", [None, OWN_CLUSTER, "broker-b:9092"])
async def test_on_the_own_cluster_a_kafka_destination_writes_under_its_prefix(
    catalog: Catalog, servers: str | None
) -> None:
    config: dict[str, Any] = {"topic": "anything"}
    if servers:
        config["bootstrapServers"] = servers
    error = await refused(catalog.create(Destination, "2", destination("kafka", config)))
    assert isinstance(error, Invalid)
    assert "'ws-2.'" in error.details["configuration.topic"]
    created = await catalog.create(
        Destination, "2", destination("kafka", {**config, "topic": "ws-2.out"})
    )
    assert created.configuration["topic"] == "ws-2.out"


@pytest.mark.parametrize("topic", ["sync-status", "sync-dlq", "model-changes", "ws-1.in"])
async def test_a_kafka_destination_never_writes_a_topic_the_service_reads(
    catalog: Catalog, topic: str
) -> None:
    await catalog.create(Source, "1", source("ws-1.in"))
    error = await refused(catalog.create(Destination, "1", destination("kafka", {"topic": topic})))
    assert "reads or writes" in error.details["configuration.topic"]


async def test_another_cluster_is_left_to_the_egress_policy(catalog: Catalog) -> None:
    config = {"topic": "anything", "bootstrapServers": "elsewhere:9092"}
    created = await catalog.create(Destination, "2", destination("kafka", config))
    assert created.configuration["topic"] == "anything"


async def test_the_prefix_is_a_setting(store: Store) -> None:
    catalog = make_catalog(store, kafka_destination_topic_prefix="tenant{workspaceId}-")
    await catalog.create(Destination, "7", destination("kafka", {"topic": "tenant7-out"}))
    error = await refused(catalog.create(Destination, "7", destination("kafka", {"topic": "x"})))
    assert "'tenant7-'" in error.details["configuration.topic"]


# --- destination fields a driver would trip over ------------------------------------------


@pytest.mark.parametrize(
    "servers", ["a:b:c", "host:99999", "host:0", "host:port", ",", "[::1", "host"]
)
async def test_unusable_bootstrap_servers_are_refused(catalog: Catalog, servers: str) -> None:
    config = {"topic": "t", "bootstrapServers": servers}
    error = await refused(catalog.create(Destination, "1", destination("kafka", config)))
    assert set(error.details) == {"configuration.bootstrapServers"}


@pytest.mark.parametrize("servers", ["host:9092", "h1:1,h2:2", "[::1]:9092"])
async def test_usable_bootstrap_servers_are_taken(catalog: Catalog, servers: str) -> None:
    config = {"topic": "t", "bootstrapServers": servers}
    await catalog.create(Destination, "1", destination("kafka", config))


async def test_a_missing_ca_file_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    config = {
        "topic": "t",
        "bootstrapServers": "elsewhere:9093",
        "securityProtocol": "SSL",
        "sslCafile": str(tmp_path / "absent.pem"),
    }
    error = await refused(catalog.create(Destination, "1", destination("kafka", config)))
    assert error.details == {"configuration.sslCafile": "no such file"}
    (tmp_path / "garbage.pem").write_text("not a certificate")
    config["sslCafile"] = str(tmp_path / "garbage.pem")
    error = await refused(catalog.create(Destination, "1", destination("kafka", config)))
    assert set(error.details) == {"configuration.sslCafile"}


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb"])
async def test_a_header_value_with_cr_or_lf_is_refused(catalog: Catalog, value: str) -> None:
    config = {"url": "http://example.com/hook", "headers": {"X-Key": value}}
    error = await refused(catalog.create(Destination, "1", destination("webhook", config)))
    assert set(error.details) == {"configuration.headers"}
    assert value not in str(error.details)


async def test_a_header_name_that_is_no_token_is_refused(catalog: Catalog) -> None:
    config = {"url": "http://example.com/hook", "headers": {"X Key:": "v"}}
    error = await refused(catalog.create(Destination, "1", destination("webhook", config)))
    assert set(error.details) == {"configuration.headers"}


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:hunter2-secret@db:99999/x",
        "postgresql://u:hunter2-secret@db:5432,db2:port/x",
        "postgresql://u:hunter2-secret@[::1/x",
    ],
)
async def test_an_unreadable_dsn_is_refused_without_echoing_it(catalog: Catalog, dsn: str) -> None:
    config = {"dsn": dsn, "table": "t"}
    error = await refused(catalog.create(Destination, "1", destination("postgres", config)))
    assert set(error.details) == {"configuration.dsn"}
    assert "hunter2-secret" not in str(error.details)


@pytest.mark.parametrize(
    "dsn", ["postgresql://u:p@db/x", "postgresql://u:p@h1:5432,h2:5433/x", "postgres://[::1]:5/x"]
)
async def test_a_readable_dsn_is_taken(catalog: Catalog, dsn: str) -> None:
    await catalog.create(Destination, "1", destination("postgres", {"dsn": dsn, "table": "t"}))


# --- the egress hook ------------------------------------------------------------------------


async def test_the_destination_check_refuses_with_its_fields(store: Store) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def check(type_name: str, configuration: dict[str, Any]) -> dict[str, str]:
        seen.append((type_name, configuration))
        if "127.0.0.2" in configuration.get("url", ""):
            return {"url": "a loopback address is not allowed"}
        return {}

    catalog = make_catalog(store, destination_check=check)
    config = {"url": "http://127.0.0.2:1/hook", "secret": "s3cret-value"}
    error = await refused(catalog.create(Destination, "1", destination("webhook", config)))
    assert isinstance(error, Invalid)
    assert error.details == {"configuration.url": "a loopback address is not allowed"}
    created = await catalog.create(
        Destination, "1", destination("webhook", {**config, "url": "http://example.com/"})
    )
    # The check sees the real secret, also when a patch sends the masked value back.
    patch = DestinationPatch.model_validate(
        {"configuration": {**Catalog.shown(created)["configuration"], "batchSize": 5}}
    )
    await catalog.update(Destination, "1", created.id, patch)
    assert seen[-1][1]["secret"] == "s3cret-value"


async def test_the_destination_checks_reason_never_shows_a_secret(store: Store) -> None:
    def check(type_name: str, configuration: dict[str, Any]) -> dict[str, str]:
        return {"headers": f"refused {configuration['headers']}"}

    catalog = make_catalog(store, destination_check=check)
    config = {"url": "http://example.com/", "headers": {"Authorization": "Bearer tok-12345"}}
    error = await refused(catalog.create(Destination, "1", destination("webhook", config)))
    assert "tok-12345" not in str(error.details)
    assert "********" in error.details["configuration.headers"]


# --- configuration limits -----------------------------------------------------------------


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def sync_parts(catalog: Catalog) -> tuple[str, str]:
    model = await catalog.create(
        Model, "1", ModelCreate.model_validate({"name": "m", "slug": "m", "primaryKey": "id"})
    )
    dest = await catalog.create(
        Destination, "1", destination("webhook", {"url": "http://example.com/"})
    )
    return model.id, dest.id


def sync_body(model_id: str, dest_id: str, **configuration: Any) -> Any:
    return SyncCreate.model_validate(
        {
            "slug": "s",
            "modelId": model_id,
            "destinationId": dest_id,
            "schedule": {"type": "manual"},
            "configuration": {"mappings": [{"from": "id", "to": "id"}], **configuration},
        }
    )


@pytest.mark.parametrize("depth", [33, 300])
async def test_a_sync_configuration_nested_too_deep_is_refused(
    catalog: Catalog, depth: int
) -> None:
    model_id, dest_id = await sync_parts(catalog)
    error = await refused(catalog.create(Sync, "1", sync_body(model_id, dest_id, x=nested(depth))))
    assert isinstance(error, Invalid)
    assert "nested deeper than 32" in error.details["configuration"]
    # 32 levels in all (the configuration itself is one) are taken.
    await catalog.create(Sync, "1", sync_body(model_id, dest_id, x=nested(31)))


async def test_a_sync_configuration_too_large_is_refused(catalog: Catalog) -> None:
    model_id, dest_id = await sync_parts(catalog)
    error = await refused(catalog.create(Sync, "1", sync_body(model_id, dest_id, x="y" * 70_000)))
    assert "larger than 65536 bytes" in error.details["configuration"]


async def test_a_patch_is_held_to_the_same_limits(catalog: Catalog) -> None:
    model_id, dest_id = await sync_parts(catalog)
    sync = await catalog.create(Sync, "1", sync_body(model_id, dest_id))
    patch = SyncPatch.model_validate(
        {"configuration": {"mappings": [{"from": "id", "to": "id"}], "x": nested(100)}}
    )
    error = await refused(catalog.update(Sync, "1", sync.id, patch))
    assert set(error.details) == {"configuration"}


async def test_destination_and_model_configurations_have_limits(catalog: Catalog) -> None:
    deep = {"url": "http://example.com/", "headers": {}, "x": nested(40)}
    error = await refused(catalog.create(Destination, "1", destination("webhook", deep)))
    assert set(error.details) == {"configuration"}
    tags = {f"k{i}": "v" * 1000 for i in range(70)}
    body = {"name": "m", "slug": "m", "primaryKey": "id", "tags": tags}
    error = await refused(catalog.create(Model, "1", ModelCreate.model_validate(body)))
    assert set(error.details) == {"tags"}


# --- templates ------------------------------------------------------------------------------


async def test_a_template_that_does_not_parse_is_refused_with_the_reason(
    catalog: Catalog,
) -> None:
    model_id, dest_id = await sync_parts(catalog)
    body = sync_body(model_id, dest_id)
    body.configuration["mappings"].append(
        {"type": "template", "to": "x", "template": "{% for a in b %}{{ a }}"}
    )
    error = await refused(catalog.create(Sync, "1", body))
    [(field, reason)] = error.details.items()
    assert field.startswith("configuration.mappings.1.template")
    assert "Liquid" in reason


# --- references, secrets, workspaces ------------------------------------------------------


async def test_a_sync_gets_its_key_and_columns_from_the_model(catalog: Catalog) -> None:
    model_id, dest_id = await sync_parts(catalog)
    body = sync_body(model_id, dest_id)
    body.configuration["mappings"].append({"type": "template", "to": "n", "template": "{{ b }}"})
    sync = await catalog.create(Sync, "1", body)
    assert (sync.primary_key, sync.referenced_columns) == ("id", ["id", "b"])
    assert sync.status == "pending"


async def test_references_are_scoped_to_the_workspace(catalog: Catalog) -> None:
    model_id, dest_id = await sync_parts(catalog)
    error = await refused(catalog.create(Sync, "2", sync_body(model_id, dest_id)))
    assert set(error.details) == {"modelId", "destinationId"}


async def test_a_put_keeps_a_masked_secret_and_an_unchanged_resource(catalog: Catalog) -> None:
    spec = destination("webhook", {"url": "http://example.com/", "secret": "s3cret"})
    first = await catalog.put(Destination, "1", "5", spec)
    masked = destination("webhook", Catalog.shown(first)["configuration"])
    again = await catalog.put(Destination, "1", "5", masked)
    assert again.configuration["secret"] == "s3cret"
    assert again.updated_at == first.updated_at


async def test_a_put_cannot_take_another_workspaces_id(catalog: Catalog) -> None:
    await catalog.put(Source, "1", "3", source("a"))
    error = await refused(catalog.put(Source, "2", "3", source("b")))
    assert isinstance(error, Conflicting)
    assert set(error.details) == {"id"}


async def test_the_primary_key_stays_while_syncs_use_the_model(catalog: Catalog) -> None:
    model_id, dest_id = await sync_parts(catalog)
    await catalog.create(Sync, "1", sync_body(model_id, dest_id))
    body = ModelCreate.model_validate({"name": "m", "slug": "m", "primaryKey": "email"})
    error = await refused(catalog.put(Model, "1", model_id, body))
    assert isinstance(error, Conflicting)
    assert set(error.details) == {"primaryKey"}


async def test_a_put_that_loses_a_race_to_the_same_put_takes_the_winners_resource(
    store: Store, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas applying one resources file at once: the second insert of model 5 fails on
    its slug because the first just wrote it; the second put then finds it and succeeds."""
    spec = ModelCreate.model_validate({"name": "users", "slug": "users", "primaryKey": "id"})
    upsert = store.upsert

    async def other_replica_wins(item: Any) -> None:
        monkeypatch.setattr(store, "upsert", upsert)
        await upsert(item)  # the other replica's write lands first
        raise Conflict("slug", "slug 'users' is already used")

    monkeypatch.setattr(store, "upsert", other_replica_wins)
    model = await catalog.put(Model, "1", "5", spec)
    assert (model.id, model.slug) == ("5", "users")
    assert [m.id for m in await store.list(Model, "1")] == ["5"]
