"""Routes of /sources: where change events come from (ours; Hightouch's shape)."""

from __future__ import annotations

from aiohttp import web

from service.api.http import catalog, path_id, read_body, workspace
from service.api.resource import Route, crud_routes, list_named, show
from service.api.schemas import CatalogQuery
from service.core.models import Source
from service.core.specs import SourceCreate, SourcePatch


async def list_sources(request: web.Request) -> web.Response:
    return await list_named(request, Source)


async def get_source(request: web.Request) -> web.Response:
    return await show(
        request, await catalog(request).get(Source, workspace(request), path_id(request))
    )


async def create_source(request: web.Request) -> web.Response:
    body = await read_body(request, SourceCreate)
    return await show(request, await catalog(request).create(Source, workspace(request), body))


async def patch_source(request: web.Request) -> web.Response:
    body = await read_body(request, SourcePatch)
    source = await catalog(request).update(Source, workspace(request), path_id(request), body)
    return await show(request, source)


async def delete_source(request: web.Request) -> web.Response:
    await catalog(request).delete(Source, workspace(request), path_id(request))
    return web.Response(status=204)


ROUTES: list[Route] = crud_routes(
    "sources",
    Source,
    SourceCreate,
    SourcePatch,
    CatalogQuery,
    (list_sources, get_source, create_source, patch_source, delete_source),
)
