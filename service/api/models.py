"""Routes of /models: what a sync reads, fed by change events."""

from __future__ import annotations

from aiohttp import web

from service.api.http import catalog, path_id, read_body, workspace
from service.api.resource import Route, crud_routes, list_named, show
from service.api.schemas import CatalogQuery, ModelOut
from service.core.models import Model
from service.core.specs import ModelCreate, ModelPatch


async def list_models(request: web.Request) -> web.Response:
    return await list_named(request, Model)


async def get_model(request: web.Request) -> web.Response:
    return await show(
        request, await catalog(request).get(Model, workspace(request), path_id(request))
    )


async def create_model(request: web.Request) -> web.Response:
    body = await read_body(request, ModelCreate)
    return await show(request, await catalog(request).create(Model, workspace(request), body))


async def patch_model(request: web.Request) -> web.Response:
    body = await read_body(request, ModelPatch)
    model = await catalog(request).update(Model, workspace(request), path_id(request), body)
    return await show(request, model)


async def delete_model(request: web.Request) -> web.Response:
    await catalog(request).delete(Model, workspace(request), path_id(request))
    return web.Response(status=204)


ROUTES: list[Route] = crud_routes(
    "models",
    ModelOut,
    ModelCreate,
    ModelPatch,
    CatalogQuery,
    (list_models, get_model, create_model, patch_model, delete_model),
)
