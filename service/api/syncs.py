"""Routes of /syncs: a model to a destination, and triggering its runs."""

from __future__ import annotations

from aiohttp import web

from service.api.http import (
    API_PREFIX,
    RUNS,
    catalog,
    invalid,
    json_response,
    not_found,
    path_id,
    read_body,
    read_query,
    workspace,
)
from service.api.resource import Route, crud_routes, page, show
from service.api.schemas import SyncQuery, TriggerAnswer, TriggerBody, TriggerBySyncBody
from service.core.models import Sync
from service.core.specs import SyncCreate, SyncPatch


async def list_syncs(request: web.Request) -> web.Response:
    query = read_query(request, SyncQuery)
    syncs, more = await catalog(request).page(
        Sync,
        workspace(request),
        limit=query.limit,
        offset=query.offset,
        filters={"slug": query.slug, "model_id": query.model_id},
        order_by=query.order_by,
        last_run_after=query.after,
        last_run_before=query.before,
    )
    return json_response(page(syncs, more, {}))


async def get_sync(request: web.Request) -> web.Response:
    return await show(
        request, await catalog(request).get(Sync, workspace(request), path_id(request))
    )


async def create_sync(request: web.Request) -> web.Response:
    body = await read_body(request, SyncCreate)
    return await show(request, await catalog(request).create(Sync, workspace(request), body))


async def patch_sync(request: web.Request) -> web.Response:
    body = await read_body(request, SyncPatch)
    sync = await catalog(request).update(Sync, workspace(request), path_id(request), body)
    return await show(request, sync)


async def delete_sync(request: web.Request) -> web.Response:
    await catalog(request).delete(Sync, workspace(request), path_id(request))
    return web.Response(status=204)


async def _trigger(request: web.Request, sync: Sync, body: TriggerBody) -> web.Response:
    if sync.disabled:
        raise invalid({"syncId": "the sync is disabled; enable it to run it"})
    run_id = await request.app[RUNS].trigger(
        sync, full_resync=body.full_resync, reset_cdc=body.reset_cdc
    )
    return json_response({"id": run_id})


async def trigger_sync(request: web.Request) -> web.Response:
    sync = await catalog(request).get(Sync, workspace(request), path_id(request))
    body = await read_body(request, TriggerBody) if await request.read() else TriggerBody()
    return await _trigger(request, sync, body)


async def trigger_sync_by(request: web.Request) -> web.Response:
    body = await read_body(request, TriggerBySyncBody)
    ws = workspace(request)
    if body.sync_id is not None:
        sync = await catalog(request).get(Sync, ws, body.sync_id)
    elif body.sync_slug is not None:
        found, _ = await catalog(request).page(
            Sync, ws, limit=1, offset=0, filters={"slug": body.sync_slug}
        )
        if not found:
            raise not_found("sync")
        sync = found[0]
    else:
        raise invalid({"syncId": "give syncId or syncSlug"})
    return await _trigger(request, sync, body)


ROUTES: list[Route] = [
    Route(
        "POST",
        f"{API_PREFIX}/syncs/trigger",
        trigger_sync_by,
        "Trigger a sync by id or slug",
        body=TriggerBySyncBody,
        response=TriggerAnswer,
    ),
    *crud_routes(
        "syncs",
        Sync,
        SyncCreate,
        SyncPatch,
        SyncQuery,
        (list_syncs, get_sync, create_sync, patch_sync, delete_sync),
    ),
    Route(
        "POST",
        f"{API_PREFIX}/syncs/{{id}}/trigger",
        trigger_sync,
        "Trigger a sync run",
        body=TriggerBody,
        response=TriggerAnswer,
    ),
]
