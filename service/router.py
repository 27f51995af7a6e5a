"""The router: which enabled syncs a model's events feed, and which workspace owns each topic,
rebuilt when the catalog changes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service.core.events import source_route
from service.core.models import Source, Sync
from service.core.rows import RouteIndex, SyncRoute

log = logging.getLogger(__name__)


def build_routes(
    syncs: Iterable[Sync], model_sources: Mapping[str, str] | None = None
) -> RouteIndex:
    """modelId -> the routes of its enabled syncs (every workspace). With `model_sources`
    (modelId -> sourceId), also a source's route name (`source_route`) -> the routes of every
    model over that source: a record of a table feeds each model of the table."""
    index: dict[str, list[SyncRoute]] = {}
    for sync in syncs:
        if sync.disabled:
            continue
        route = SyncRoute(sync.id, sync.primary_key, tuple(sync.referenced_columns))
        index.setdefault(sync.model_id, []).append(route)
        source_id = model_sources.get(sync.model_id) if model_sources else None
        if source_id is not None:
            index.setdefault(source_route(source_id), []).append(route)
    return {model_id: tuple(routes) for model_id, routes in index.items()}


def build_workspace_routes(
    syncs: Iterable[Sync], model_sources: Mapping[str, str] | None = None
) -> dict[str, RouteIndex]:
    """workspaceId -> (modelId -> the routes of its enabled syncs)."""
    by_workspace: dict[str, list[Sync]] = {}
    for sync in syncs:
        by_workspace.setdefault(sync.workspace_id, []).append(sync)
    return {ws: build_routes(group, model_sources) for ws, group in by_workspace.items()}


@dataclass(slots=True)
class TopicPlan:
    """What to consume: each topic's owning workspace, and the sources that name a topic."""

    owners: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    #: Topics refused, with why (the service's own topics, a topic another workspace owns).
    refused: dict[str, str] = field(default_factory=dict)


def plan_topics(
    events_topics: Iterable[str],
    default_workspace: str,
    sources: Iterable[Source],
    reserved: Iterable[str],
) -> TopicPlan:
    """The default topics belong to the default workspace, a source's topic to its workspace.
    The service's own topics (status, DLQ) are never consumed, whoever names them: consuming
    the DLQ would send its own dead letters round for ever. A topic named by sources of two
    workspaces stays with the workspace of the oldest source."""
    plan = TopicPlan()
    own = set(reserved)
    for topic in events_topics:
        if topic in own:
            plan.refused[topic] = "the service's own topic"
            continue
        plan.owners[topic] = default_workspace
    for source in sorted(sources, key=lambda s: int(s.id) if s.id.isdigit() else 0):
        topic = source.configuration.get("topic")
        if not isinstance(topic, str) or not topic:
            continue
        if topic in own:
            plan.refused[topic] = "the service's own topic"
            continue
        owner = plan.owners.get(topic)
        if owner is None:
            plan.owners[topic] = source.workspace_id
            plan.sources[topic] = source
        elif owner != source.workspace_id:
            plan.refused[f"{topic} (source {source.id})"] = f"owned by workspace {owner}"
    return plan
