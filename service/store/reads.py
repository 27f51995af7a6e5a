"""Reads the SQLite and PostgreSQL stores answer with the same SQL (`?` placeholders)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import orjson

from service.core.models import SyncRun
from service.core.rows import PendingRow, RejectedRow
from service.store import sql as shared
from service.store.base import RunQuery, Store, T


class SqlReads(Store):
    """Implements the read-only part of `Store` on top of one `_rows` query method."""

    #: SQL type that orders ids as numbers.
    _NUMERIC = "INTEGER"

    @abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement with `?` placeholders, in a transaction of its own."""

    async def catalog_version(self) -> int:
        rows = await self._rows("SELECT value FROM meta WHERE name = 'catalog_version'")
        return int(rows[0][0]) if rows else 0

    async def get(self, kind: type[T], item_id: str, workspace_id: str | None = None) -> T | None:
        sql, params = shared.select_items(kind, workspace_id)
        rows = await self._rows(sql + " AND id = ?", (*params, item_id))
        return shared.item_from_row(kind, rows[0]) if rows else None

    async def list(self, kind: type[T], workspace_id: str | None = None) -> list[T]:
        sql, params = shared.select_items(kind, workspace_id)
        rows = await self._rows(sql + f" ORDER BY CAST(id AS {self._NUMERIC})", params)
        return [shared.item_from_row(kind, r) for r in rows]

    async def pending_counts(self) -> dict[str, int]:
        rows = await self._rows(shared.PENDING_COUNTS)
        return {r[0]: r[1] for r in rows}

    async def failed_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._rows(shared.FAILED_COUNTS)}

    async def _pending(
        self, fields: tuple[tuple[str, str], ...], rest: str, params: Sequence[Any]
    ) -> list[PendingRow]:
        """PendingRows of `fields` (shared.PENDING_FIELDS or PAGE_FIELDS), in the order `rest`
        (FROM ... ORDER BY ...) gives them."""
        rows = await self._rows(shared.select_fields(fields, rest), params)
        json_at = [i for i, (_, kind) in enumerate(fields) if kind == "json"]
        found = []
        for r in rows:
            values = list(r)
            for i in json_at:
                if values[i] is not None:
                    values[i] = orjson.loads(values[i])
            found.append(PendingRow(*values))
        return found

    async def list_pending(
        self, sync_id: str, *, failed_only: bool, limit: int, offset: int
    ) -> tuple[list[PendingRow], bool]:
        rest, params = shared.select_pending(sync_id, failed_only, limit, offset)
        rows = await self._pending(shared.PENDING_FIELDS, rest, params)
        return rows[:limit], len(rows) > limit

    async def max_pending_seq(self, sync_id: str) -> int:
        rows = await self._rows(shared.MAX_PENDING_SEQ, (sync_id,))
        return int(rows[0][0])

    async def pending_page(
        self, sync_id: str, after_seq: int, upto_seq: int, limit: int
    ) -> list[PendingRow]:
        params = (sync_id, after_seq, upto_seq, limit)
        return await self._pending(shared.PAGE_FIELDS, shared.PENDING_PAGE, params)

    async def list_rejected(
        self, sync_id: str, *, limit: int, offset: int
    ) -> tuple[list[RejectedRow], bool]:
        rows = await self._rows(shared.LIST_REJECTED, (sync_id, limit + 1, offset))
        return [RejectedRow(*r) for r in rows[:limit]], len(rows) > limit

    async def open_snapshots(self) -> list[tuple[str, str, float]]:
        return [(r[0], r[1], r[2]) for r in await self._rows(shared.OPEN_SNAPSHOTS)]

    async def list_runs(self, query: RunQuery) -> tuple[list[SyncRun], bool]:
        rows = await self._rows(*shared.select_runs(query))
        runs = [SyncRun.model_validate_json(r[0]) for r in rows[: query.limit]]
        return runs, len(rows) > query.limit
