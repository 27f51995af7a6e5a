"""The OpenAPI 3.1 document, generated from the route table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from service.api.http import API_PREFIX
from service.api.routes import ROUTES
from service.api.schemas import ErrorBody

_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }


def build_openapi(version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorBody, "serialization")]
    for route in ROUTES:
        if route.body is not None:
            models.append((route.body, "validation"))
        if route.response is not None:
            models.append((route.response, "serialization"))
    keys, defs = models_json_schema(models, ref_template=_REF, by_alias=True)
    schemas = defs.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return keys[(model, mode)]

    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "tags": [route.tag],
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": p,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                }
                for p in _PATH_PARAM.findall(route.path)
            ],
        }
        if route.query is not None:
            query_schema = TypeAdapter(route.query).json_schema(by_alias=True, ref_template=_REF)
            for name, schema in query_schema.get("properties", {}).items():
                op["parameters"].append(
                    {"name": name, "in": "query", "required": False, "schema": schema}
                )
        if route.body is not None:
            op["requestBody"] = {
                "required": route.body.__name__ not in {"TriggerBody"},
                "content": {"application/json": {"schema": ref(route.body, "validation")}},
            }
        responses: dict[str, Any] = {}
        if route.response is not None:
            responses[str(route.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref(route.response, "serialization")}},
            }
        else:
            responses[str(route.status)] = {"description": "Done"}
        responses["400"] = _error("Malformed request")
        responses["401"] = _error("Authentication error")
        if "{" in route.path or route.handler.__name__ == "trigger_sync_by":
            responses["404"] = _error("Not found in this workspace")
        if route.body is not None or route.method == "DELETE" or "cancel" in route.path:
            responses["409"] = _error("Conflict (slug in use, still referenced, run finished)")
        responses["413"] = _error("Request body too large")
        responses["422"] = _error("Validation failed")
        op["responses"] = responses
        paths.setdefault(route.path.removeprefix(API_PREFIX), {})[route.method.lower()] = op
    _link(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sync-service API",
            "version": version,
            "description": "Hightouch API v1 compatible: syncs, models, destinations, sources.",
        },
        "servers": [{"url": API_PREFIX}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


#: Per collection: the operations on one item that follow its creation.
_ITEM_OPERATIONS = {
    "sources": ("get_source", "patch_source", "delete_source"),
    "models": ("get_model", "patch_model", "delete_model"),
    "destinations": (
        "get_destination",
        "patch_destination",
        "delete_destination",
        "test_destination",
    ),
    "syncs": ("get_sync", "patch_sync", "delete_sync", "trigger_sync", "list_runs", "list_rows"),
}


def _link(paths: dict[str, dict[str, Any]]) -> None:
    """OpenAPI links: what a created item's id (or a triggered run's) may be used for next,
    so that a client (or a stateful test) can walk from one operation to the next."""
    for collection, operations in _ITEM_OPERATIONS.items():
        created = paths[f"/{collection}"]["post"]["responses"]["200"]
        created["links"] = {
            name: {"operationId": name, "parameters": {"path.id": "$response.body#/id"}}
            for name in operations
        }
    triggered = paths["/syncs/{id}/trigger"]["post"]["responses"]["200"]
    triggered["links"] = {
        "cancel_run": {
            "operationId": "cancel_run",
            "parameters": {"path.id": "$request.path.id", "path.runId": "$response.body#/id"},
        },
        "list_runs": {
            "operationId": "list_runs",
            "parameters": {"path.id": "$request.path.id", "query.runId": "$response.body#/id"},
        },
    }
