"""Routes of a sync's runs and rows: what ran, what waits to be sent, what was refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web

from service.api.http import (
    API_PREFIX,
    RUNS,
    STORE,
    catalog,
    conflict,
    json_response,
    not_found,
    path_id,
    read_query,
    workspace,
)
from service.api.resource import Route
from service.api.schemas import Page, PendingRowOut, RowsQuery, RunsQuery
from service.core.models import Sync, SyncRun
from service.store.base import RunQuery


async def _sync(request: web.Request) -> Sync:
    return await catalog(request).get(Sync, workspace(request), path_id(request))


async def list_runs(request: web.Request) -> web.Response:
    sync = await _sync(request)
    query = read_query(request, RunsQuery)
    after = query.after
    if query.within is not None:
        since = datetime.now(UTC) - timedelta(minutes=query.within)
        after = max(after, since) if after else since
    runs, more = await request.app[STORE].list_runs(
        RunQuery(
            sync_id=sync.id,
            run_id=query.run_id,
            after=after,
            before=query.before,
            limit=query.limit,
            offset=query.offset,
            order_by=query.order_by,
            workspace_id=sync.workspace_id,
        )
    )
    return json_response({"data": [r.to_json_dict() for r in runs], "hasMore": more})


async def cancel_run(request: web.Request) -> web.Response:
    sync = await _sync(request)
    run_id = path_id(request, "runId")
    store = request.app[STORE]
    only = RunQuery(sync_id=sync.id, run_id=run_id, limit=1, workspace_id=sync.workspace_id)
    runs, _ = await store.list_runs(only)
    if not runs:
        raise not_found("run")
    if runs[0].status.is_final or not await request.app[RUNS].cancel(sync, run_id):
        raise conflict({"runId": f"the run is {runs[0].status.value}, not queued or running"})
    runs, _ = await store.list_runs(only)
    return json_response(runs[0].to_json_dict())


async def list_rows(request: web.Request) -> web.Response:
    """Ours: the rows of a sync still waiting to be sent, or those a destination refused."""
    sync = await _sync(request)
    query = read_query(request, RowsQuery)
    if query.status == "rejected":
        return await _list_rejected(request, sync, query)
    rows, more = await request.app[STORE].list_pending(
        sync.id,
        failed_only=query.status == "failed",
        limit=query.limit,
        offset=query.offset,
        workspace_id=sync.workspace_id,
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
    rows, more = await request.app[STORE].list_rejected(
        sync.id, limit=query.limit, offset=query.offset, workspace_id=sync.workspace_id
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


ROUTES: list[Route] = [
    Route(
        "GET",
        f"{API_PREFIX}/syncs/{{id}}/runs",
        list_runs,
        "List a sync's runs",
        query=RunsQuery,
        response=Page[SyncRun],
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
]
