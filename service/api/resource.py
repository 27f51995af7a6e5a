"""What every resource's routes share: the route table's entry, showing and listing items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from service.api.http import API_PREFIX, Handler, catalog, json_response, read_query, workspace
from service.api.schemas import CatalogQuery, Page
from service.catalog import Catalog
from service.catalog.service import Users
from service.core.models import Destination, Model


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


def crud_routes(
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
            "PATCH",
            f"{base}/{{id}}",
            upd,
            f"Update a {name}",
            body=patch,
            response=kind,
            tag=tag,
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


async def show(request: web.Request, item: Any) -> web.Response:
    users = await catalog(request).users(workspace(request), [item]) if _used(item) else None
    return json_response(catalog(request).shown(item, users))


def _used(item: Any) -> bool:
    return isinstance(item, Model | Destination)


def page(items: Sequence[Any], more: bool, users: Users) -> dict[str, Any]:
    return {"data": [Catalog.shown(i, users) for i in items], "hasMore": more}


async def list_named(request: web.Request, kind: type[Any]) -> web.Response:
    """A list of sources, models or destinations, filtered by name and slug."""
    query = read_query(request, CatalogQuery)
    ws = workspace(request)
    items, more = await catalog(request).page(
        kind,
        ws,
        limit=query.limit,
        offset=query.offset,
        filters={"name": query.name, "slug": query.slug},
        order_by=query.order_by,
    )
    users = await catalog(request).users(ws, items) if kind in (Model, Destination) else {}
    return json_response(page(items, more, users))
