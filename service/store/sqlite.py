"""The embedded SQLite store (one process, one replica)."""

from __future__ import annotations

from service.store.dialect import SqliteDialect, sqlite_path
from service.store.store import SqlStore

__all__ = ["SqliteStore", "sqlite_path"]


class SqliteStore(SqlStore):
    def __init__(self, url: str, *, timeout: float = 10.0, schema_upto: int | None = None) -> None:
        super().__init__(SqliteDialect(url, timeout=timeout, schema_upto=schema_upto))
