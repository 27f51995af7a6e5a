"""The Hightouch-compatible REST API v1: syncs, models, destinations, sources, runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.api.http import (
    API_PREFIX,
    DESTINATION_CONTEXT,
    RUNS,
    STORE,
    Handler,
    conflict,
    invalid,
    json_response,
    not_found,
    path_id,
    read_body,
    read_query,
    validation_details,
    workspace,
)
from service.api.schemas import (
    CatalogQuery,
    DestinationCheck,
    DestinationCreate,
    DestinationOut,
    DestinationPatch,
    ModelCreate,
    ModelOut,
    ModelPatch,
    Page,
    PendingRowOut,
    RowsQuery,
    RunsQuery,
    SourceCreate,
    SourcePatch,
    SyncCreate,
    SyncPatch,
    SyncQuery,
    TriggerAnswer,
    TriggerBody,
    TriggerBySyncBody,
)
from service.api.webhooks import DBT_CLOUD_PATH, dbt_cloud
from service.core.errors import ConfigurationError, DestinationError
from service.core.models import (
    Destination,
    Model,
    Source,
    Sync,
    SyncConfiguration,
    SyncRun,
    SyncStatus,
    referenced_columns,
    utcnow,
)
from service.destinations.registry import (
    mask_configuration,
    open_destination,
    unmask_configuration,
    validate_configuration,
)
from service.store.base import CatalogItem, Conflict, RunQuery, Store


@dataclass(frozen=True, slots=True)
class Route:
    """One API operation; the OpenAPI document is generated from this table."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None  # a pydantic type; None for 204
    status: int = 200
    tag: str = "syncs"


# --- helpers -------------------------------------------------------------------------------


def _store(request: web.Request) -> Store:
    return request.app[STORE]


def _page(items: Sequence[Any], limit: int, offset: int, users: Users) -> dict[str, Any]:
    chunk = items[offset : offset + limit]
    return {"data": [_shown(i, users) for i in chunk], "hasMore": offset + limit < len(items)}


#: Per (kind, id): the ids of the syncs that use a model or destination.
Users = dict[tuple[type, str], list[str]]


async def _users(request: web.Request) -> Users:
    users: Users = {}
    for sync in await _store(request).list(Sync, workspace(request)):
        users.setdefault((Model, sync.model_id), []).append(sync.id)
        users.setdefault((Destination, sync.destination_id), []).append(sync.id)
    return users


def _shown(item: Any, users: Users | None = None) -> dict[str, Any]:
    data = item.to_json_dict()
    if isinstance(item, Destination):
        data["configuration"] = mask_configuration(item.type, item.configuration)
    if isinstance(item, Model | Destination):
        data["syncs"] = (users or {}).get((type(item), item.id), [])
    return data


async def _show(request: web.Request, item: Any) -> web.Response:
    users = await _users(request) if isinstance(item, Model | Destination) else None
    return json_response(_shown(item, users))


_SORT_FIELDS = {
    "id": lambda i: int(i.id),
    "name": lambda i: i.name,
    "slug": lambda i: i.slug,
    "createdAt": lambda i: i.created_at,
    "updatedAt": lambda i: i.updated_at,
}


def _sorted(items: list[Any], order_by: str) -> list[Any]:
    if order_by == "lastRunAt":
        epoch = datetime.min.replace(tzinfo=UTC)
        return sorted(items, key=lambda s: (s.last_run_at or epoch, int(s.id)))
    return sorted(items, key=_SORT_FIELDS[order_by])


async def _get(request: web.Request, kind: type[Any], what: str, key: str = "id") -> Any:
    item = await _store(request).get(kind, path_id(request, key), workspace(request))
    if item is None:
        raise not_found(what)
    return item


async def _save(request: web.Request, item: CatalogItem, *, new: bool) -> Any:
    try:
        if new:
            return await _store(request).create(item)
        await _store(request).upsert(item)
        return item
    except Conflict as exc:
        raise conflict({exc.field: str(exc)}) from None


def _rebuild(kind: type[Any], current: Any, changes: dict[str, Any]) -> Any:
    try:
        return kind.model_validate({**current.model_dump(), **changes, "updated_at": utcnow()})
    except ValidationError as exc:
        raise invalid(validation_details(exc)) from None


async def _delete(request: web.Request, kind: type[CatalogItem], what: str) -> web.Response:
    try:
        deleted = await _store(request).delete(kind, path_id(request), workspace(request))
    except Conflict as exc:
        raise conflict({exc.field: str(exc)}) from None
    if not deleted:
        raise not_found(what)
    return web.Response(status=204)


async def _list(request: web.Request, kind: type[Any]) -> web.Response:
    query = read_query(request, CatalogQuery)
    items = await _store(request).list(kind, workspace(request))
    items = [
        i
        for i in items
        if (query.name is None or i.name == query.name)
        and (query.slug is None or i.slug == query.slug)
    ]
    users = await _users(request) if kind in (Model, Destination) else {}
    return json_response(_page(_sorted(items, query.order_by), query.limit, query.offset, users))


# --- sources -------------------------------------------------------------------------------


async def list_sources(request: web.Request) -> web.Response:
    return await _list(request, Source)


async def get_source(request: web.Request) -> web.Response:
    return await _show(request, await _get(request, Source, "source"))


async def create_source(request: web.Request) -> web.Response:
    body = await read_body(request, SourceCreate)
    source = Source(
        id="0",
        name=body.name,
        slug=body.slug,
        type=body.type,
        configuration=body.configuration.model_dump(),
        workspace_id=workspace(request),
    )
    return await _show(request, await _save(request, source, new=True))


async def patch_source(request: web.Request) -> web.Response:
    current = await _get(request, Source, "source")
    body = await read_body(request, SourcePatch)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    source = _rebuild(Source, current, changes)
    return await _show(request, await _save(request, source, new=False))


async def delete_source(request: web.Request) -> web.Response:
    return await _delete(request, Source, "source")


# --- models --------------------------------------------------------------------------------


async def _check_source(request: web.Request, source_id: str | None) -> None:
    if source_id is not None and not await _store(request).get(
        Source, source_id, workspace(request)
    ):
        raise invalid({"sourceId": f"no source {source_id} in this workspace"})


async def list_models(request: web.Request) -> web.Response:
    return await _list(request, Model)


async def get_model(request: web.Request) -> web.Response:
    return await _show(request, await _get(request, Model, "model"))


async def create_model(request: web.Request) -> web.Response:
    body = await read_body(request, ModelCreate)
    await _check_source(request, body.source_id)
    model = Model(id="0", workspace_id=workspace(request), **body.model_dump())
    return await _show(request, await _save(request, model, new=True))


async def patch_model(request: web.Request) -> web.Response:
    current: Model = await _get(request, Model, "model")
    body = await read_body(request, ModelPatch)
    changes = body.model_dump(exclude_unset=True)
    await _check_source(request, changes.get("source_id"))
    new_key = changes.get("primary_key")
    if new_key is not None and new_key != current.primary_key:
        syncs = await _store(request).list(Sync, workspace(request))
        if any(s.model_id == current.id for s in syncs):
            raise conflict(
                {"primaryKey": "the primary key cannot change while syncs use the model"}
            )
    if changes.get("primary_key", "") is None:
        changes.pop("primary_key")
    model = _rebuild(Model, current, changes)
    return await _show(request, await _save(request, model, new=False))


async def delete_model(request: web.Request) -> web.Response:
    return await _delete(request, Model, "model")


# --- destinations --------------------------------------------------------------------------


def _check_destination_config(type_name: str, configuration: dict[str, Any]) -> None:
    try:
        validate_configuration(type_name, configuration)
    except ValidationError as exc:
        raise invalid(validation_details(exc, "configuration")) from None
    except ConfigurationError as exc:
        raise invalid({"type": str(exc)}) from None


async def list_destinations(request: web.Request) -> web.Response:
    return await _list(request, Destination)


async def get_destination(request: web.Request) -> web.Response:
    return await _show(request, await _get(request, Destination, "destination"))


async def create_destination(request: web.Request) -> web.Response:
    body = await read_body(request, DestinationCreate)
    _check_destination_config(body.type, body.configuration)
    destination = Destination(id="0", workspace_id=workspace(request), **body.model_dump())
    return await _show(request, await _save(request, destination, new=True))


async def patch_destination(request: web.Request) -> web.Response:
    current: Destination = await _get(request, Destination, "destination")
    body = await read_body(request, DestinationPatch)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "configuration" in changes:
        changes["configuration"] = unmask_configuration(
            changes["configuration"], current.configuration
        )
        _check_destination_config(current.type, changes["configuration"])
    destination = _rebuild(Destination, current, changes)
    return await _show(request, await _save(request, destination, new=False))


async def test_destination(request: web.Request) -> web.Response:
    """Ours: open the destination, check it can take rows, close it."""
    destination: Destination = await _get(request, Destination, "destination")
    try:
        writer = open_destination(destination, request.app[DESTINATION_CONTEXT])
    except ConfigurationError as exc:
        return json_response({"ok": False, "error": str(exc)})
    try:
        await writer.open()
        await writer.check()
    except DestinationError as exc:
        return json_response({"ok": False, "error": str(exc)})
    finally:
        await writer.close()
    return json_response({"ok": True, "error": None})


async def delete_destination(request: web.Request) -> web.Response:
    return await _delete(request, Destination, "destination")


# --- syncs ---------------------------------------------------------------------------------


def _sync_configuration(configuration: dict[str, Any]) -> SyncConfiguration:
    try:
        return SyncConfiguration.model_validate(configuration)
    except ValidationError as exc:
        raise invalid(validation_details(exc, "configuration")) from None


async def list_syncs(request: web.Request) -> web.Response:
    query = read_query(request, SyncQuery)
    syncs = await _store(request).list(Sync, workspace(request))
    syncs = [
        s
        for s in syncs
        if (query.slug is None or s.slug == query.slug)
        and (query.model_id is None or s.model_id == query.model_id)
        and (query.after is None or (s.last_run_at is not None and s.last_run_at > query.after))
        and (query.before is None or (s.last_run_at is not None and s.last_run_at < query.before))
    ]
    return json_response(_page(_sorted(syncs, query.order_by), query.limit, query.offset, {}))


async def get_sync(request: web.Request) -> web.Response:
    return await _show(request, await _get(request, Sync, "sync"))


async def create_sync(request: web.Request) -> web.Response:
    body = await read_body(request, SyncCreate)
    ws = workspace(request)
    model = await _store(request).get(Model, body.model_id, ws)
    details: dict[str, str] = {}
    if model is None:
        details["modelId"] = f"no model {body.model_id} in this workspace"
    if await _store(request).get(Destination, body.destination_id, ws) is None:
        details["destinationId"] = f"no destination {body.destination_id} in this workspace"
    if details:
        raise invalid(details)
    assert model is not None
    config = _sync_configuration(body.configuration)
    sync = Sync(
        id="0",
        workspace_id=ws,
        status=SyncStatus.DISABLED if body.disabled else SyncStatus.PENDING,
        primary_key=model.primary_key,
        referenced_columns=referenced_columns(model.primary_key, config),
        **body.model_dump(),
    )
    return await _show(request, await _save(request, sync, new=True))


async def patch_sync(request: web.Request) -> web.Response:
    current: Sync = await _get(request, Sync, "sync")
    body = await read_body(request, SyncPatch)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "configuration" in changes:
        config = _sync_configuration(changes["configuration"])
        changes["referenced_columns"] = referenced_columns(current.primary_key, config)
    if "disabled" in changes:
        disabled_now = changes["disabled"]
        if disabled_now:
            changes["status"] = SyncStatus.DISABLED
        elif current.status is SyncStatus.DISABLED:
            changes["status"] = SyncStatus.PENDING
    sync = _rebuild(Sync, current, changes)
    saved = await _save(request, sync, new=False)
    fresh = await _store(request).get(Sync, saved.id, workspace(request))
    return await _show(request, fresh or saved)


async def delete_sync(request: web.Request) -> web.Response:
    return await _delete(request, Sync, "sync")


async def _trigger(request: web.Request, sync: Sync, body: TriggerBody) -> web.Response:
    if sync.disabled:
        raise invalid({"syncId": "the sync is disabled; enable it to run it"})
    run_id = await request.app[RUNS].trigger(
        sync, full_resync=body.full_resync, reset_cdc=body.reset_cdc
    )
    return json_response({"id": run_id})


async def trigger_sync(request: web.Request) -> web.Response:
    sync = await _get(request, Sync, "sync", key="id")
    body = await read_body(request, TriggerBody) if await request.read() else TriggerBody()
    return await _trigger(request, sync, body)


async def trigger_sync_by(request: web.Request) -> web.Response:
    body = await read_body(request, TriggerBySyncBody)
    ws = workspace(request)
    if body.sync_id is not None:
        sync = await _store(request).get(Sync, body.sync_id, ws)
    elif body.sync_slug is not None:
        sync = next(
            (s for s in await _store(request).list(Sync, ws) if s.slug == body.sync_slug), None
        )
    else:
        raise invalid({"syncId": "give syncId or syncSlug"})
    if sync is None:
        raise not_found("sync")
    return await _trigger(request, sync, body)


async def list_runs(request: web.Request) -> web.Response:
    sync = await _get(request, Sync, "sync")
    query = read_query(request, RunsQuery)
    after = query.after
    if query.within is not None:
        since = datetime.now(UTC) - timedelta(minutes=query.within)
        after = max(after, since) if after else since
    runs, more = await _store(request).list_runs(
        RunQuery(
            sync_id=sync.id,
            run_id=query.run_id,
            after=after,
            before=query.before,
            limit=query.limit,
            offset=query.offset,
            order_by=query.order_by,
        )
    )
    return json_response({"data": [r.to_json_dict() for r in runs], "hasMore": more})


async def list_rows(request: web.Request) -> web.Response:
    """Ours: the rows of a sync still waiting to be sent, or those a destination refused."""
    sync = await _get(request, Sync, "sync")
    query = read_query(request, RowsQuery)
    if query.status == "rejected":
        return await _list_rejected(request, sync, query)
    rows, more = await _store(request).list_pending(
        sync.id, failed_only=query.status == "failed", limit=query.limit, offset=query.offset
    )
    data = [
        PendingRowOut(
            key=r.key,
            operation=r.op,
            error=r.error,
            attempts=r.attempts,
            last_attempt_at=(
                datetime.fromtimestamp(r.last_attempt_at, UTC) if r.last_attempt_at else None
            ),
        ).model_dump(mode="json", by_alias=True)
        for r in rows
    ]
    return json_response({"data": data, "hasMore": more})


async def _list_rejected(request: web.Request, sync: Sync, query: RowsQuery) -> web.Response:
    rows, more = await _store(request).list_rejected(
        sync.id, limit=query.limit, offset=query.offset
    )
    data = [
        PendingRowOut(
            key=None,
            operation="upsert",
            error=r.reason,
            attempts=1,
            last_attempt_at=datetime.fromtimestamp(r.created_at, UTC),
            row=orjson.loads(r.data),
        ).model_dump(mode="json", by_alias=True)
        for r in rows
    ]
    return json_response({"data": data, "hasMore": more})


async def cancel_run(request: web.Request) -> web.Response:
    sync = await _get(request, Sync, "sync")
    run_id = path_id(request, "runId")
    runs, _ = await _store(request).list_runs(RunQuery(sync_id=sync.id, run_id=run_id, limit=1))
    if not runs:
        raise not_found("run")
    if runs[0].status.is_final or not await request.app[RUNS].cancel(sync, run_id):
        raise conflict({"runId": f"the run is {runs[0].status.value}, not queued or running"})
    runs, _ = await _store(request).list_runs(RunQuery(sync_id=sync.id, run_id=run_id, limit=1))
    return json_response(runs[0].to_json_dict())


# --- the table -----------------------------------------------------------------------------


def _crud(
    tag: str,
    kind: type[BaseModel],
    create: type[BaseModel],
    patch: type[BaseModel],
    query: type[BaseModel],
    handlers: tuple[Handler, Handler, Handler, Handler, Handler],
) -> list[Route]:
    lst, get, post, upd, delete = handlers
    base = f"{API_PREFIX}/{tag}"
    name = tag.rstrip("s")
    return [
        Route("GET", base, lst, f"List {tag}", query=query, response=Page[kind], tag=tag),
        Route("POST", base, post, f"Create a {name}", body=create, response=kind, tag=tag),
        Route("GET", f"{base}/{{id}}", get, f"Get a {name}", response=kind, tag=tag),
        Route(
            "PATCH", f"{base}/{{id}}", upd, f"Update a {name}", body=patch, response=kind, tag=tag
        ),
        Route(
            "DELETE",
            f"{base}/{{id}}",
            delete,
            f"Delete a {name} (not in Hightouch)",
            status=204,
            tag=tag,
        ),
    ]


ROUTES: list[Route] = [
    Route(
        "POST",
        f"{API_PREFIX}/syncs/trigger",
        trigger_sync_by,
        "Trigger a sync by id or slug",
        body=TriggerBySyncBody,
        response=TriggerAnswer,
    ),
    *_crud(
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
    Route(
        "GET",
        f"{API_PREFIX}/syncs/{{id}}/runs",
        list_runs,
        "List a sync's runs",
        query=RunsQuery,
        response=Page[SyncRun],
    ),
    Route(
        "POST",
        f"{API_PREFIX}/destinations/{{id}}/test",
        test_destination,
        "Check that a destination can take rows now (not in Hightouch)",
        response=DestinationCheck,
        tag="destinations",
    ),
    Route(
        "GET",
        f"{API_PREFIX}/syncs/{{id}}/rows",
        list_rows,
        "Rows waiting to be sent, or refused by the destination (not in Hightouch)",
        query=RowsQuery,
        response=Page[PendingRowOut],
    ),
    Route(
        "POST",
        f"{API_PREFIX}/syncs/{{id}}/runs/{{runId}}/cancel",
        cancel_run,
        "Cancel a queued or running run (not in Hightouch)",
        response=SyncRun,
    ),
    *_crud(
        "models",
        ModelOut,
        ModelCreate,
        ModelPatch,
        CatalogQuery,
        (list_models, get_model, create_model, patch_model, delete_model),
    ),
    *_crud(
        "destinations",
        DestinationOut,
        DestinationCreate,
        DestinationPatch,
        CatalogQuery,
        (
            list_destinations,
            get_destination,
            create_destination,
            patch_destination,
            delete_destination,
        ),
    ),
    *_crud(
        "sources",
        Source,
        SourceCreate,
        SourcePatch,
        CatalogQuery,
        (list_sources, get_source, create_source, patch_source, delete_source),
    ),
]


def add_api_routes(app: web.Application, openapi: Callable[[], dict[str, Any]]) -> None:
    document: dict[str, Any] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        if not document:
            document.update(openapi())
        return json_response(document)

    app.router.add_get(f"{API_PREFIX}/openapi.json", openapi_json)
    app.router.add_post(DBT_CLOUD_PATH, dbt_cloud)
    for route in ROUTES:
        # Ids are numeric, so /syncs/trigger never reads as the sync "trigger".
        path = route.path.replace("{id}", r"{id:\d+(?:\.0+)?}")
        path = path.replace("{runId}", r"{runId:\d+(?:\.0+)?}")
        app.router.add_route(route.method, path, route.handler)
