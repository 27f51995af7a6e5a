"""The router: which enabled syncs a model's events feed, rebuilt when the catalog changes."""

from __future__ import annotations

from collections.abc import Iterable

from service.core.models import Sync
from service.core.rows import RouteIndex, SyncRoute


def build_routes(syncs: Iterable[Sync]) -> RouteIndex:
    """modelId -> the routes of its enabled syncs."""
    index: dict[str, list[SyncRoute]] = {}
    for sync in syncs:
        if sync.disabled:
            continue
        route = SyncRoute(sync.id, sync.primary_key, tuple(sync.referenced_columns))
        index.setdefault(sync.model_id, []).append(route)
    return {model_id: tuple(routes) for model_id, routes in index.items()}
