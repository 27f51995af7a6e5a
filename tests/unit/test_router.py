"""plan_topics and CatalogView: which topics are consumed, and whose models their events reach."""

from __future__ import annotations

from typing import Any

from service.core.models import Model, Source, Sync
from service.pipeline.catalog import CatalogView
from service.router import plan_topics
from service.source.debezium import DebeziumSources
from service.source.kafka import EventBatch
from tests.support import change


def source(id: str, topic: str, workspace: str) -> Source:
    return Source(
        id=id, name=f"s{id}", slug=f"s{id}", workspace_id=workspace, configuration={"topic": topic}
    )


def sync(id: str, model: str, workspace: str) -> Sync:
    return Sync.model_validate(
        {
            "id": id,
            "slug": f"sync-{id}",
            "workspaceId": workspace,
            "modelId": model,
            "destinationId": "1",
            "schedule": {"type": "continuous", "schedule": {}},
            "configuration": {},
            "primaryKey": "id",
            "referencedColumns": ["id"],
        }
    )


def test_the_service_never_consumes_its_own_topics_whoever_names_them() -> None:
    plan = plan_topics(
        ["model-changes", "sync-dlq"],
        "1",
        [source("1", "sync-status", "2"), source("2", "sync-dlq", "1"), source("3", "t2", "2")],
        reserved=["sync-status", "sync-dlq"],
    )
    assert plan.owners == {"model-changes": "1", "t2": "2"}
    assert set(plan.refused) == {"sync-status", "sync-dlq"}


def test_a_topic_keeps_its_first_owner() -> None:
    plan = plan_topics(
        ["model-changes"],
        "1",
        [source("5", "model-changes", "2"), source("3", "t", "2"), source("4", "t", "3")],
        reserved=[],
    )
    assert plan.owners == {"model-changes": "1", "t": "2"}
    assert len(plan.refused) == 2


class Store:
    def __init__(
        self, syncs: list[Sync], sources: list[Source], models: list[Model] | None = None
    ) -> None:
        self.syncs, self.sources, self.models = syncs, sources, models or []

    async def list_models(self) -> list[Model]:
        return self.models

    async def catalog_version(self) -> int:
        return 1

    async def list_syncs(self) -> list[Sync]:
        return self.syncs

    async def list_sources(self) -> list[Source]:
        return self.sources


class Subscriber:
    topics: set[str] = set()

    def subscribe(self, topics: set[str], decoders: Any = None) -> None:
        self.topics = topics


class Scheduler:
    def set_syncs(self, syncs: Any) -> None:
        pass


async def test_an_event_reaches_only_the_models_of_its_topics_workspace() -> None:
    store = Store([sync("1", "10", "1"), sync("2", "20", "2")], [source("1", "ws2", "2")])
    subscriber = Subscriber()
    catalog = CatalogView(
        store,  # type: ignore[arg-type]
        subscriber,
        Scheduler(),
        events_topics=["model-changes"],
        default_workspace="1",
        reserved_topics=["sync-dlq", "sync-status"],
    )
    await catalog.refresh()
    assert subscriber.topics == {"model-changes", "ws2"}
    events = [
        change({"modelId": m, "op": "upsert", "rows": []}) for m in ("10", "20", "10", "20", "10")
    ]
    batch = EventBatch(events=events, spans=[("model-changes", 2), ("ws2", 4), ("gone", 5)])
    routes = catalog.routes_for(batch)
    found = [bool(index.get(e.model_id)) for index, e in zip(routes, events, strict=True)]
    # workspace 1's topic feeds model 10 only; workspace 2's model 20 only; an unowned none
    assert found == [True, False, False, True, False]


def model(id: str, source_id: str) -> Model:
    return Model(
        id=id, name=f"m{id}", slug=f"m{id}", workspace_id="1", source_id=source_id, primary_key="id"
    )


async def test_a_debezium_record_feeds_every_model_over_its_source() -> None:
    cdc = Source(
        id="3",
        name="cdc",
        slug="cdc",
        workspace_id="1",
        configuration={"topic": "pg.public.customers", "format": "debezium"},
    )
    store = Store(
        [sync("1", "10", "1"), sync("2", "20", "1"), sync("3", "30", "1")],
        [cdc, source("4", "plain", "1")],
        [model("10", "3"), model("20", "3"), model("30", "4")],
    )
    subscriber = Subscriber()
    catalog = CatalogView(
        store,  # type: ignore[arg-type]
        subscriber,
        Scheduler(),
        events_topics=["model-changes"],
        default_workspace="1",
        reserved_topics=["sync-dlq", "sync-status"],
        decoder_for=DebeziumSources(),
    )
    decoders: dict[str, Any] = {}
    subscriber.subscribe = lambda topics, d=None: decoders.update(d or {})  # type: ignore[method-assign]
    await catalog.refresh()
    assert set(decoders) == {"pg.public.customers"}  # the other source keeps the own format
    record = b'{"before": null, "after": {"id": 5}, "op": "c", "source": {"ts_ms": 1000}}'
    event = decoders["pg.public.customers"](b'{"id": 5}', record)
    assert event.rows == [{"id": 5}]
    assert event.emitted_at == 1.0
    batch = EventBatch(events=[event], spans=[("pg.public.customers", 1)])
    (index,) = catalog.routes_for(batch)
    assert sorted(r.sync_id for r in index[event.model_id]) == ["1", "2"]
    assert catalog.is_model(event.model_id) and catalog.is_model("30")
    assert not catalog.is_model("99")
