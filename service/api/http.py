"""Request plumbing shared by every API route: keys, JSON in and out, errors, auth."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ValidationError

from service.api.auth import TokenTable
from service.catalog import Catalog, CatalogError
from service.catalog.checks import validation_details
from service.core.interfaces import RunControl
from service.core.models import MAX_ID
from service.destinations.registry import DestinationContext
from service.store.base import Store

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE = web.AppKey("store", Store)
CATALOG = web.AppKey("catalog", Catalog)
TOKENS = web.AppKey("tokens", TokenTable)
RUNS = web.AppKey("runs", RunControl)
DESTINATION_CONTEXT = web.AppKey("destination_context", DestinationContext)
WORKSPACE = web.RequestKey("workspace_id", str)

API_PREFIX = "/api/v1"
#: Routes under the prefix that authenticate by other means (a signed webhook).
OPEN_API_PATHS: frozenset[str] = frozenset({f"{API_PREFIX}/webhooks/dbt-cloud"})


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, details: dict[str, str] | str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def not_found(what: str) -> ApiError:
    return ApiError(404, "Not found", f"no {what} with that id in this workspace")


def invalid(details: dict[str, str]) -> ApiError:
    return ApiError(422, "Validation failed", details)


def conflict(details: dict[str, str]) -> ApiError:
    return ApiError(409, "Validation failed", details)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    if isinstance(body, BaseModel):
        payload = body.model_dump_json(by_alias=True).encode()
    else:
        payload = orjson.dumps(body)
    return web.Response(
        body=payload, status=status, content_type="application/json", headers=headers
    )


async def read_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()  # over client_max_size: aiohttp answers 413
    if not raw.strip():
        raise ApiError(400, "Malformed request", "the request needs a JSON body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "Malformed request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Malformed request", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(validation_details(exc)) from None


_INTEGRAL_FLOAT = re.compile(r"^(\d+)\.0+$")


def integral(value: str) -> str:
    """ "5.0" -> "5": clients generated from Hightouch's spec send ids and limits as floats."""
    match = _INTEGRAL_FLOAT.match(value)
    return match.group(1) if match else value


def path_id(request: web.Request, name: str = "id") -> str:
    """The id in the path; one no store can hold names nothing (404)."""
    value = integral(request.match_info[name])
    if int(value) > MAX_ID:
        raise ApiError(404, "Not found", "no resource with that id in this workspace")
    return value


def catalog(request: web.Request) -> Catalog:
    return request.app[CATALOG]


def read_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate({k: integral(v) for k, v in request.query.items()})
    except ValidationError as exc:
        raise invalid(validation_details(exc)) from None


def workspace(request: web.Request) -> str:
    return request[WORKSPACE]


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON bodies (never a stack trace) and bearer auth on /api/v1."""
    try:
        if request.path.startswith(API_PREFIX) and request.path not in OPEN_API_PATHS:
            found = request.app[TOKENS].workspace_for(request.headers.get("Authorization"))
            if found is None:
                raise ApiError(
                    401,
                    "Authentication error",
                    "send Authorization: Bearer <token> with a valid API token",
                )
            request[WORKSPACE] = found
        return await handler(request)
    except ApiError as exc:
        body: dict[str, Any] = {"message": exc.message}
        if exc.details is not None:
            body["details"] = exc.details
        return json_response(body, exc.status)
    except CatalogError as exc:
        if exc.status == 404:
            return json_response({"message": "Not found", "details": exc.details["id"]}, 404)
        return json_response({"message": "Validation failed", "details": exc.details}, exc.status)
    except web.HTTPRequestEntityTooLarge:
        return json_response(
            {"message": "Request too large", "details": "the body exceeds the size limit"}, 413
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return json_response({"message": exc.reason}, exc.status, kept)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_response({"message": "Internal error"}, 500)


class OneLineBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (bad framing, a header it refuses) with a full
    traceback at ERROR; anyone can send one, so it becomes one WARNING line naming the peer
    and the kind of fault, never the bytes received (they may hold a token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            peer = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad HTTP request from %s: %s (HTTP %s)"
            record.args = (peer, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


def quiet_bad_requests() -> None:
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, OneLineBadRequests) for f in server_log.filters):
        server_log.addFilter(OneLineBadRequests())
