"""The one path by which sources, models, destinations and syncs are written, whether a request
to the API or the resources file asks: validation, defaults, references, secrets, workspaces."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from service.catalog.checks import (
    ConfigurationLimits,
    ca_file_problem,
    check_limits,
    destination_configuration,
    scrub,
    secret_values,
    source_configuration,
    sync_configuration,
)
from service.catalog.errors import Conflicting, Invalid, NotFound
from service.core.errors import validation_details
from service.core.models import (
    Destination,
    Model,
    Source,
    Sync,
    SyncStatus,
    referenced_columns,
    utcnow,
)
from service.destinations.registry import mask_configuration, unmask_configuration
from service.store.base import CatalogItem, Conflict, Store

T = TypeVar("T", Source, Model, Destination, Sync)

#: The egress policy's say on a destination: (type, configuration) -> {field: reason}, empty
#: when allowed. Fields are the configuration's keys (`url`) or dotted from the resource
#: (`configuration.url`). Called on every create and update, with the real secret values.
DestinationCheck = Callable[[str, dict[str, Any]], dict[str, str]]

#: Per (kind, id): the ids of the syncs that use a model or destination.
Users = dict[tuple[type, str], list[str]]

_WHAT: dict[type, str] = {
    Source: "source",
    Model: "model",
    Destination: "destination",
    Sync: "sync",
}
#: Patch fields where an explicit null means "clear it" rather than "leave it as it is".
_NULLABLE = frozenset({"source_id"})


def _servers(bootstrap: str | None) -> frozenset[str]:
    return frozenset(s.strip().lower() for s in (bootstrap or "").split(",") if s.strip())


class Catalog:
    """Every call is scoped to one workspace: another workspace's resource is NotFound. Writes
    raise Invalid (422), Conflicting (409) or NotFound (404), each naming the field at fault;
    nothing a caller sees holds a secret. Writes are serialised, so that a rule read from the
    store (a topic taken, a model in use) still holds when the write lands."""

    def __init__(
        self,
        store: Store,
        *,
        default_workspace: str = "1",
        events_topics: Iterable[str] = (),
        status_topic: str | None = None,
        dlq_topic: str | None = None,
        kafka_bootstrap_servers: str | None = None,
        kafka_destination_topic_prefix: str = "ws-{workspaceId}.",
        destination_check: DestinationCheck | None = None,
        limits: ConfigurationLimits | None = None,
    ) -> None:
        self._store = store
        self._default_workspace = default_workspace
        self._events_topics = frozenset(events_topics)
        self._service_topics = frozenset(t for t in (status_topic, dlq_topic) if t)
        self._own_servers = _servers(kafka_bootstrap_servers)
        self._prefix = kafka_destination_topic_prefix
        # The prefix as a pattern, to tell which workspace a topic name is reserved for.
        head, _, tail = kafka_destination_topic_prefix.partition("{workspaceId}")
        self._prefix_owner = (
            re.compile(f"^{re.escape(head)}([0-9]+){re.escape(tail)}")
            if "{workspaceId}" in kafka_destination_topic_prefix
            else None
        )
        self._destination_check = destination_check
        self._limits = limits or ConfigurationLimits()
        self._writing = asyncio.Lock()

    # reads -----------------------------------------------------------------------------

    async def get(self, kind: type[T], workspace_id: str, item_id: str) -> T:
        item = await self._store.get(kind, item_id, workspace_id)
        if item is None:
            raise NotFound(_WHAT[kind])
        return item

    async def list(self, kind: type[T], workspace_id: str) -> list[T]:
        return await self._store.list(kind, workspace_id)

    async def users(self, workspace_id: str) -> Users:
        users: Users = {}
        for sync in await self._store.list(Sync, workspace_id):
            users.setdefault((Model, sync.model_id), []).append(sync.id)
            users.setdefault((Destination, sync.destination_id), []).append(sync.id)
        return users

    @staticmethod
    def shown(item: CatalogItem, users: Users | None = None) -> dict[str, Any]:
        """The item as a client may see it: secrets masked; a model or destination with the
        ids of the syncs that use it."""
        data = item.to_json_dict()
        if isinstance(item, Destination):
            data["configuration"] = mask_configuration(item.type, item.configuration)
        if isinstance(item, Model | Destination):
            data["syncs"] = (users or {}).get((type(item), item.id), [])
        return data

    # writes ----------------------------------------------------------------------------

    async def create(self, kind: type[T], workspace_id: str, spec: BaseModel) -> T:
        """A new resource with the next id; `spec` is the kind's create body."""
        async with self._writing:
            fields = await self._complete(kind, workspace_id, None, spec.model_dump())
            item = self._validated(kind, {**fields, "id": "0", "workspace_id": workspace_id})
            try:
                return await self._store.create(item)
            except Conflict as exc:
                raise Conflicting({exc.field: str(exc)}) from None

    async def update(self, kind: type[T], workspace_id: str, item_id: str, patch: BaseModel) -> T:
        """Change the fields the patch carries; a masked secret sent back keeps the stored one."""
        changes = {
            k: v
            for k, v in patch.model_dump(exclude_unset=True).items()
            if v is not None or k in _NULLABLE
        }
        async with self._writing:
            current = await self.get(kind, workspace_id, item_id)
            await self._replace(kind, workspace_id, current, changes, keep_unchanged=False)
        return await self.get(kind, workspace_id, item_id)

    async def put(self, kind: type[T], workspace_id: str, item_id: str, spec: BaseModel) -> T:
        """Create or replace the resource with this id (the resources file's upsert): every
        field as the spec says, defaults for those it leaves out. Unchanged, it keeps its
        updatedAt."""
        fields = spec.model_dump(exclude={"id"})
        async with self._writing:
            for second_look in (False, True):
                current = await self._store.get(kind, item_id)
                if current is not None and current.workspace_id != workspace_id:
                    what = f"{_WHAT[kind]} {item_id} belongs to another workspace"
                    raise Conflicting({"id": what})
                if current is not None:
                    return await self._replace(
                        kind, workspace_id, current, fields, keep_unchanged=True
                    )
                completed = await self._complete(kind, workspace_id, None, fields)
                item = self._validated(
                    kind, {**completed, "id": item_id, "workspace_id": workspace_id}
                )
                try:
                    await self._upsert(item)
                except Conflicting:
                    # Replicas that start together apply the same file at once: the one that
                    # lost the race finds the resource there now and takes it as it is.
                    if second_look or await self._store.get(kind, item_id) is None:
                        raise
                    continue
                return item
        raise AssertionError("unreachable: the second look returns or raises")

    async def delete(self, kind: type[CatalogItem], workspace_id: str, item_id: str) -> None:
        """Refused (Conflicting) while another resource refers to it."""
        async with self._writing:
            try:
                deleted = await self._store.delete(kind, item_id, workspace_id)
            except Conflict as exc:
                raise Conflicting({exc.field: str(exc)}) from None
        if not deleted:
            raise NotFound(_WHAT[kind])

    async def _replace(
        self,
        kind: type[T],
        workspace_id: str,
        current: T,
        changes: dict[str, Any],
        *,
        keep_unchanged: bool,
    ) -> T:
        fields = {**current.model_dump(), **changes}
        fields = await self._complete(kind, workspace_id, current, fields)
        item = self._validated(kind, {**fields, "updated_at": utcnow()})
        if keep_unchanged and item.model_dump(exclude={"updated_at"}) == current.model_dump(
            exclude={"updated_at"}
        ):
            return current
        await self._upsert(item)
        return item

    async def _upsert(self, item: CatalogItem) -> None:
        try:
            await self._store.upsert(item)
        except Conflict as exc:
            raise Conflicting({exc.field: str(exc)}) from None

    @staticmethod
    def _validated(kind: type[T], fields: dict[str, Any]) -> T:
        try:
            return kind.model_validate(fields)
        except ValidationError as exc:
            raise Invalid(validation_details(exc)) from None

    async def _complete(
        self, kind: type[T], workspace_id: str, current: T | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Check the resource's fields against every rule; return them with what the server
        fills in (a sync's primaryKey, referencedColumns and status)."""
        if kind is Source:
            return await self._source(workspace_id, fields)
        if kind is Model:
            return await self._model(workspace_id, current, fields)
        if kind is Destination:
            return await self._destination(workspace_id, current, fields)
        return await self._sync(workspace_id, current, fields)

    # sources: topics belong to workspaces ----------------------------------------------

    async def _source(self, workspace_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        check_limits("configuration", fields["configuration"], self._limits)
        configuration = source_configuration(fields["configuration"])
        topic = configuration["topic"]
        field = "configuration.topic"
        if topic in self._service_topics:
            raise Invalid({field: "the service's own status or dead-letter topic"})
        if topic in self._events_topics and workspace_id != self._default_workspace:
            raise Invalid({field: "the topic belongs to the default workspace"})
        owner = self._reserved_for(topic)
        if owner is not None and owner != workspace_id:
            raise Invalid({field: "the name is reserved for another workspace's destinations"})
        for source in await self._store.list(Source):
            if source.workspace_id != workspace_id and source.configuration.get("topic") == topic:
                raise Conflicting({field: "the topic is a source of another workspace"})
        return {**fields, "configuration": configuration}

    def _reserved_for(self, topic: str) -> str | None:
        """The workspace whose Kafka destinations may write this topic, if it is one."""
        match = self._prefix_owner.match(topic) if self._prefix_owner else None
        return str(int(match.group(1))) if match else None

    # models ----------------------------------------------------------------------------

    async def _model(
        self, workspace_id: str, current: Model | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        check_limits("tags", fields.get("tags") or {}, self._limits)
        source_id = fields.get("source_id")
        if source_id is not None and not await self._store.get(Source, source_id, workspace_id):
            raise Invalid({"sourceId": f"no source {source_id} in this workspace"})
        if current is not None and fields.get("primary_key") != current.primary_key:
            syncs = await self._store.list(Sync, workspace_id)
            if any(s.model_id == current.id for s in syncs):
                raise Conflicting(
                    {"primaryKey": "the primary key cannot change while syncs use the model"}
                )
        return fields

    # destinations ----------------------------------------------------------------------

    async def _destination(
        self, workspace_id: str, current: Destination | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        configuration = fields["configuration"]
        check_limits("configuration", configuration, self._limits)
        if current is not None:
            configuration = unmask_configuration(configuration, current.configuration)
        type_name = fields["type"]
        secrets = secret_values(type_name, configuration)
        try:
            destination_configuration(type_name, configuration)
            details = await self._destination_rules(workspace_id, type_name, configuration)
            if details:
                raise Invalid(details)
        except Invalid as exc:
            raise Invalid({k: scrub(v, secrets) for k, v in exc.details.items()}) from None
        return {**fields, "configuration": configuration}

    async def _destination_rules(
        self, workspace_id: str, type_name: str, configuration: dict[str, Any]
    ) -> dict[str, str]:
        details: dict[str, str] = {}
        if type_name == "kafka":
            cafile = configuration.get("sslCafile")
            problem = await ca_file_problem(cafile) if isinstance(cafile, str) else None
            if problem:
                details["configuration.sslCafile"] = problem
            topic_problem = await self._kafka_topic_problem(workspace_id, configuration)
            if topic_problem:
                details["configuration.topic"] = topic_problem
        if not details and self._destination_check is not None:
            for field, reason in self._destination_check(type_name, configuration).items():
                key = field if field.startswith("configuration") else f"configuration.{field}"
                details[key] = reason
        return details

    async def _kafka_topic_problem(
        self, workspace_id: str, configuration: dict[str, Any]
    ) -> str | None:
        """On the service's own cluster a workspace writes only topics under its prefix, and
        never one the service reads or writes itself; other clusters are the egress policy's."""
        servers = _servers(configuration.get("bootstrapServers"))
        if servers and not servers & self._own_servers:
            return None
        topic = str(configuration.get("topic"))
        consumed = {str(s.configuration.get("topic")) for s in await self._store.list(Source)}
        if topic in self._service_topics | self._events_topics | consumed:
            return "a topic the service itself reads or writes"
        prefix = self._prefix.format(workspaceId=workspace_id)
        if not topic.startswith(prefix):
            return f"on the service's own cluster, topics must start with {prefix!r}"
        return None

    # syncs -----------------------------------------------------------------------------

    async def _sync(
        self, workspace_id: str, current: Sync | None, fields: dict[str, Any]
    ) -> dict[str, Any]:
        model = await self._store.get(Model, fields["model_id"], workspace_id)
        destination_id = fields["destination_id"]
        details: dict[str, str] = {}
        if model is None:
            details["modelId"] = f"no model {fields['model_id']} in this workspace"
        if await self._store.get(Destination, destination_id, workspace_id) is None:
            details["destinationId"] = f"no destination {destination_id} in this workspace"
        if details:
            raise Invalid(details)
        assert model is not None
        check_limits("configuration", fields["configuration"], self._limits)
        configuration = sync_configuration(fields["configuration"])
        if current is None:
            status = SyncStatus.DISABLED if fields["disabled"] else SyncStatus.PENDING
        elif fields["disabled"]:
            status = SyncStatus.DISABLED
        elif current.status is SyncStatus.DISABLED:
            status = SyncStatus.PENDING
        else:
            status = current.status
        return {
            **fields,
            "primary_key": model.primary_key,
            "referenced_columns": referenced_columns(model.primary_key, configuration),
            "status": status,
        }
