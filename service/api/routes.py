"""The Hightouch-compatible REST API v1: the route table, one module per resource."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.api import destinations, models, runs, sources, syncs
from service.api.http import (
    API_PREFIX,
    CATALOG,
    DESTINATION_CONTEXT,
    STORE,
    json_response,
    quiet_bad_requests,
)
from service.api.resource import Route
from service.api.webhooks import DBT_CLOUD_PATH, dbt_cloud
from service.catalog import Catalog

__all__ = ["ROUTES", "Route", "add_api_routes"]

log = logging.getLogger(__name__)

ROUTES: list[Route] = [
    *syncs.ROUTES,
    *runs.ROUTES,
    *models.ROUTES,
    *destinations.ROUTES,
    *sources.ROUTES,
]


def add_api_routes(app: web.Application, openapi: Callable[[], dict[str, Any]]) -> None:
    """The API's routes. The composition root sets app[CATALOG] first; without one, a catalog
    that knows only the store and the service's own cluster (no reserved topics) is made."""
    document: dict[str, Any] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        if not document:
            document.update(openapi())
        return json_response(document)

    if CATALOG not in app:
        log.warning(
            "no catalog service given: the API checks no workspace's topics against the "
            "service's own (status, DLQ, events)"
        )
        app[CATALOG] = Catalog(
            app[STORE], kafka_bootstrap_servers=app[DESTINATION_CONTEXT].kafka_bootstrap_servers
        )
    quiet_bad_requests()
    app.router.add_get(f"{API_PREFIX}/openapi.json", openapi_json)
    app.router.add_post(DBT_CLOUD_PATH, dbt_cloud)
    for route in ROUTES:
        # Ids are numeric, so /syncs/trigger never reads as the sync "trigger".
        path = route.path.replace("{id}", r"{id:\d+(?:\.0+)?}")
        path = path.replace("{runId}", r"{runId:\d+(?:\.0+)?}")
        app.router.add_route(route.method, path, route.handler)
