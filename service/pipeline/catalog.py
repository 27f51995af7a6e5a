"""The pipeline's view of the catalog: routes per workspace, topics to consume, syncs to run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from service.core.events import source_route
from service.core.models import Source, Sync
from service.core.rows import RouteIndex
from service.router import TopicPlan, build_routes, build_workspace_routes, plan_topics
from service.source.kafka import Decoder, EventBatch
from service.store.base import Store

log = logging.getLogger(__name__)

_NOTHING: RouteIndex = {}


class Subscriber(Protocol):
    def subscribe(self, topics: set[str], decoders: dict[str, Decoder] | None = None) -> None: ...


class SyncSet(Protocol):
    def set_syncs(self, syncs: Iterable[Sync]) -> None: ...


class SyncSets:
    """Several parts that follow the set of syncs, told at once."""

    def __init__(self, *parts: SyncSet) -> None:
        self._parts = parts

    def set_syncs(self, syncs: Iterable[Sync]) -> None:
        syncs = list(syncs)
        for part in self._parts:
            part.set_syncs(syncs)


class CatalogView:
    """Reloaded whenever the store's catalog version moves. An event is routed only to the
    models of the workspace that owns the topic it came from."""

    def __init__(
        self,
        store: Store,
        source: Subscriber,
        scheduler: SyncSet,
        *,
        events_topics: Iterable[str],
        default_workspace: str,
        reserved_topics: Iterable[str],
        decoder_for: Callable[[Source], Decoder | None] | None = None,
    ) -> None:
        self._store = store
        self._source = source
        self._scheduler = scheduler
        self._events_topics = tuple(events_topics)
        self._default_workspace = default_workspace
        self._reserved = frozenset(reserved_topics)
        #: Picks the decoder of a source's topic (its format); None: the service's own events.
        self._decoder_for = decoder_for
        self.version = -1
        self.routes: RouteIndex = {}
        self.by_workspace: dict[str, RouteIndex] = {}
        self.plan = TopicPlan()
        self._models: frozenset[str] = frozenset()

    async def refresh(self) -> None:
        version = await self._store.catalog_version()
        if version == self.version:
            return
        syncs = await self._store.list_syncs()
        sources = await self._store.list_sources()
        models = await self._store.list_models()
        model_sources = {m.id: m.source_id for m in models if m.source_id is not None}
        self._models = frozenset([*(m.id for m in models), *(source_route(s.id) for s in sources)])
        self.routes = build_routes(syncs, model_sources)
        self.by_workspace = build_workspace_routes(syncs, model_sources)
        self._scheduler.set_syncs(syncs)
        plan = plan_topics(self._events_topics, self._default_workspace, sources, self._reserved)
        for topic, why in plan.refused.items():
            if topic not in self.plan.refused:
                log.warning("not consuming %s: %s", topic, why)
        decoders: dict[str, Decoder] = {}
        if self._decoder_for is not None:
            for topic, source in plan.sources.items():
                decoder = self._decoder_for(source)
                if decoder is not None:
                    decoders[topic] = decoder
        self._source.subscribe(set(plan.owners), decoders)
        self.plan = plan
        self.version = version

    def is_model(self, model_id: str) -> bool:
        """True for a model of any workspace, and for a source's route name."""
        return model_id in self._models

    def routes_for(self, batch: EventBatch) -> list[RouteIndex]:
        """The route index of each event of the batch, from its topic's workspace."""
        out: list[RouteIndex] = []
        start = 0
        owners = self.plan.owners
        for topic, end in batch.spans:
            owner = owners.get(topic)
            index = self.by_workspace.get(owner, _NOTHING) if owner is not None else _NOTHING
            out.extend([index] * (end - start))
            start = end
        return out
