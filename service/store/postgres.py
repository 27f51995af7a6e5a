"""The PostgreSQL store: several replicas may share one database. The URL's password never
appears in a log line or an error."""

from __future__ import annotations

from service.store.conn import pg
from service.store.dialect import PostgresDialect
from service.store.pgconnect import mask_url
from service.store.store import SqlStore

__all__ = ["PostgresStore", "pg"]


class PostgresStore(SqlStore):
    shared = True

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 10.0,
        schema_upto: int | None = None,
    ) -> None:
        self._url = url
        super().__init__(
            PostgresDialect(
                url, timeout=timeout, min_size=min_size, max_size=max_size, schema_upto=schema_upto
            )
        )

    def __repr__(self) -> str:
        return f"PostgresStore({mask_url(self._url)!r})"
