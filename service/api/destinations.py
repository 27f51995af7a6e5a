"""Routes of /destinations, and the check that a destination can take rows now."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from service.api.http import (
    API_PREFIX,
    DESTINATION_CONTEXT,
    catalog,
    json_response,
    path_id,
    read_body,
    workspace,
)
from service.api.resource import Route, crud_routes, list_named, show
from service.api.schemas import CatalogQuery, DestinationCheck, DestinationOut
from service.catalog.checks import scrub, secret_values
from service.core.errors import ConfigurationError, DestinationError
from service.core.models import Destination
from service.core.specs import DestinationCreate, DestinationPatch
from service.destinations.registry import open_destination

log = logging.getLogger(__name__)

#: The test holds a request for at most this long, whatever the destination's own timeout.
TEST_TIMEOUT_SECONDS = 10.0


async def list_destinations(request: web.Request) -> web.Response:
    return await list_named(request, Destination)


async def get_destination(request: web.Request) -> web.Response:
    destination = await catalog(request).get(Destination, workspace(request), path_id(request))
    return await show(request, destination)


async def create_destination(request: web.Request) -> web.Response:
    body = await read_body(request, DestinationCreate)
    return await show(request, await catalog(request).create(Destination, workspace(request), body))


async def patch_destination(request: web.Request) -> web.Response:
    body = await read_body(request, DestinationPatch)
    ws = workspace(request)
    destination = await catalog(request).update(Destination, ws, path_id(request), body)
    return await show(request, destination)


async def delete_destination(request: web.Request) -> web.Response:
    await catalog(request).delete(Destination, workspace(request), path_id(request))
    return web.Response(status=204)


async def test_destination(request: web.Request) -> web.Response:
    """Ours: open the destination, check it can take rows, close it. Whatever goes wrong is
    the answer's `error` (secrets masked), never a failed request."""
    destination = await catalog(request).get(Destination, workspace(request), path_id(request))
    error = await _try(destination, request)
    secrets = secret_values(destination.type, destination.configuration)
    return json_response({"ok": error is None, "error": scrub(error, secrets) if error else None})


async def _try(destination: Destination, request: web.Request) -> str | None:
    try:
        writer = open_destination(destination, request.app[DESTINATION_CONTEXT])
    except ConfigurationError as exc:
        return str(exc)
    try:
        async with asyncio.timeout(TEST_TIMEOUT_SECONDS):
            await writer.open()
            await writer.check()
    except TimeoutError:
        return f"no answer within {TEST_TIMEOUT_SECONDS:.0f} s"
    except DestinationError as exc:
        return str(exc)
    except Exception as exc:  # a driver's own error on a configuration it cannot use
        log.info("destination %s: test failed: %s", destination.id, type(exc).__name__)
        return f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):  # closing what never opened may fail too
            await writer.close()
    return None


ROUTES: list[Route] = [
    *crud_routes(
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
    Route(
        "POST",
        f"{API_PREFIX}/destinations/{{id}}/test",
        test_destination,
        "Check that a destination can take rows now (not in Hightouch)",
        response=DestinationCheck,
        tag="destinations",
    ),
]
