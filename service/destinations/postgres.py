"""The postgres destination: upserts rows into a table by its key column, deletes removed ones.

A batch is one statement per operation and per `batchBytes` of JSON (`json_populate_recordset`
turns the JSON rows into the table's own column types). When the database refuses a statement
for the data in it, its rows are written again in halves, each in a savepoint, down to the rows
at fault, so only those are refused.

Every connection obeys the egress policy: the DSN's hosts are resolved and checked, and the
connection goes to a checked address (TLS still verifies the host's name). Local sockets and
file parameters (`passfile`, `service`, `sslrootcert`...) are refused unless allowed, and so
is a DSN without a host (it would mean the local socket)."""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import asyncpg
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from service.core.errors import DestinationError, RetriableError
from service.core.interfaces import Batch, BatchResult, DestinationWriter
from service.core.rows import RowChange
from service.destinations.egress import AddressRefused, EgressPolicy, EgressRefused
from service.store.pgconnect import _ssl_option, keep_session, mask_url, scrub

#: How the destination's sessions show in pg_stat_activity (the store's are "sync-service
#: store").
APPLICATION_NAME = "sync-service destination"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: Errors about the connection: worth retrying.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InternalClientError,  # what a connection killed mid-statement leaves behind
)
#: Errors about the table or the rights on it: no row can succeed until someone fixes them.
_SCHEMA_ERRORS = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.InvalidColumnReferenceError,
    asyncpg.InsufficientPrivilegeError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


#: DSN parameters that name local files: only with local paths allowed by the policy.
_FILE_PARAMETERS = frozenset(
    {"passfile", "service", "servicefile", "sslrootcert", "sslcert", "sslkey", "sslcrl"}
)


@dataclass(slots=True)
class DsnTargets:
    """What a PostgreSQL URL connects to: TCP hosts, local socket paths, named files, and the
    URL with its hosts taken out (they are passed one checked address at a time)."""

    hosts: list[tuple[str, int]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    base: str = ""
    password: str = ""


def dsn_targets(dsn: str) -> DsnTargets:
    """Parses `postgresql://user:pw@h1:5432,[::1]:5433/db?host=...`; ValueError if unreadable."""
    scheme, sep, rest = dsn.partition("://")
    if not sep:
        raise ValueError("not a URL")
    end = min(
        [i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0] or [len(rest)]
    )
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hostlist = netloc.rpartition("@")
    path, _, query = tail.partition("?")
    query = query.split("#", 1)[0]
    params = parse_qsl(query, keep_blank_values=True)
    targets = DsnTargets()
    if at and ":" in userinfo:
        targets.password = unquote(userinfo.split(":", 1)[1])
    hosts_text, ports_text = hostlist, ""
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name == "host":
            hosts_text = value
        elif name == "port":
            ports_text = value
        else:
            if name in _FILE_PARAMETERS and value:
                targets.files.append(f"{name}={value}")
            if name == "password":
                targets.password = value
            kept.append((name, value))
    ports = [p.strip() for p in ports_text.split(",")] if ports_text else []
    entries = [h.strip() for h in hosts_text.split(",")] if hosts_text else []
    if not entries:
        targets.paths.append("the default local socket")
    for n, raw in enumerate(entries):
        host, port = raw, ports[n] if n < len(ports) else (ports[-1] if ports else "")
        if raw.startswith("["):
            close = raw.find("]")
            if close < 0:
                raise ValueError(f"{raw!r} is not a host")
            host, port = raw[1:close], raw[close + 2 :] or port
        elif raw.count(":") == 1:
            host, port = raw.split(":")
        host = unquote(host)
        if host.startswith(("/", "@")) or not host:
            targets.paths.append(host or "the default local socket")
            continue
        if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
            raise ValueError(f"{raw!r}: the port must be 1 to 65535")
        targets.hosts.append((host, int(port or 5432)))
    base_userinfo = f"{userinfo}@" if at else ""
    targets.base = f"{scheme}://{base_userinfo}{path}" + (f"?{urlencode(kept)}" if kept else "")
    return targets


def dsn_refusals(dsn: str, policy: EgressPolicy) -> list[str]:
    """What the policy refuses in a DSN without resolving names (literal addresses, paths)."""
    try:
        targets = dsn_targets(dsn)
    except ValueError as exc:
        return [str(exc)]
    reasons = [r for host, _ in targets.hosts if (r := policy.check_host(host))]
    for path in [*targets.paths, *targets.files]:
        if reason := policy.check_path(path):
            reasons.append(reason)
    return reasons


def _pin_server_name(context: ssl.SSLContext, name: str) -> ssl.SSLContext:
    """The context, verifying certificates for `name` whatever address asyncpg dials."""
    base = context.sslobject_class

    class _Named(base):  # type: ignore[misc,valid-type]
        @classmethod
        def _create(cls, incoming, outgoing, server_side=False, server_hostname=None, **kw):  # type: ignore[no-untyped-def]
            return super()._create(incoming, outgoing, server_side, name, **kw)

    context.sslobject_class = _Named
    return context


class EgressConnector:
    """asyncpg's `connect` for a pool: each new connection resolves the DSN's hosts, checks
    the addresses, and connects to the first checked one that answers."""

    def __init__(self, dsn: str, policy: EgressPolicy) -> None:
        self._dsn = dsn
        self._policy = policy
        self._targets = dsn_targets(dsn)
        self._tls: dict[str, tuple[ssl.SSLContext | bool, bool]] = {}

    async def _tls_for(self, host: str) -> tuple[ssl.SSLContext | bool, bool]:
        if host not in self._tls:
            tls, plain_ok = await asyncio.to_thread(_ssl_option, self._dsn)
            if isinstance(tls, ssl.SSLContext) and tls.check_hostname:
                tls = _pin_server_name(tls, host)
            self._tls[host] = (tls, plain_ok)
        return self._tls[host]

    def refusal(self) -> str | None:
        reasons = [
            r
            for p in self._targets.paths + self._targets.files
            if (r := self._policy.check_path(p))
        ]
        return reasons[0] if reasons else None

    async def __call__(self, _dsn: str | None = None, **kwargs: Any) -> asyncpg.Connection:
        if why := self.refusal():
            raise AddressRefused(why)
        kwargs.pop("loop", None)
        kwargs["password"] = self._targets.password  # never PGPASSWORD or a .pgpass file
        targets = self._targets
        last: BaseException | None = None
        dial: list[tuple[str, int, str | None]] = [(p, 5432, None) for p in targets.paths]
        for host, port in targets.hosts:
            try:
                dial += [(a, p, host) for a, p in await self._policy.resolve(host, port)]
            except AddressRefused as exc:
                last = exc
            except OSError as exc:
                last = OSError(f"{host}: {exc.strerror or exc}")
        for address, port, name in dial:
            tls, plain_ok = await self._tls_for(name or address)
            try:
                try:
                    return await asyncpg.connect(
                        targets.base, host=address, port=port, ssl=tls, **kwargs
                    )
                except ConnectionError as exc:
                    if not (plain_ok and "rejected SSL upgrade" in str(exc)):
                        raise
                    return await asyncpg.connect(
                        targets.base, host=address, port=port, ssl=False, **kwargs
                    )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = exc
                if isinstance(
                    exc,
                    asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError,
                ):
                    raise
        if isinstance(last, AddressRefused) or last is None:
            raise last or AddressRefused("no host to connect to")
        raise last


class SchemaError(DestinationError):
    """The table cannot take these rows at all (missing, no such column, no unique key)."""

    fatal = True


def quote_table(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


class PostgresDestinationConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    dsn: SecretStr
    table: str
    key_column: str = "id"
    create_table: bool = False
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    #: A statement carries at most this much JSON; a larger batch is written in several,
    #: in the same transaction (so huge rows cannot make one statement of hundreds of MiB).
    batch_bytes: int = Field(default=8 << 20, ge=1 << 10, le=1 << 30)

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("a PostgreSQL URL: postgresql://user:password@host:5432/db")
        return value

    @field_validator("table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError("a table name, or schema.table, of letters, digits and _")
        return value

    @field_validator("key_column")
    @classmethod
    def _column_name(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("a column name of letters, digits and _")
        return value


def _column_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict | list):
        return "jsonb"
    return "text"


class PostgresDestination(DestinationWriter):
    type_name = "postgres"

    def __init__(self, config: PostgresDestinationConfig, egress: EgressPolicy) -> None:
        self._config = config
        self._egress = egress
        self.batch_size = config.batch_size
        self.max_concurrency = config.max_concurrency
        self._table = quote_table(config.table)
        self._key = config.key_column
        self._pool: asyncpg.Pool | None = None
        self._table_ready = not config.create_table

    async def open(self) -> None:
        dsn = self._config.dsn.get_secret_value()
        try:
            connector = EgressConnector(dsn, self._egress)
        except ValueError as exc:
            raise EgressRefused(f"dsn: {exc}") from None
        if why := connector.refusal():
            raise EgressRefused(f"dsn: {why}")
        try:
            self._pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=self._config.max_concurrency,
                command_timeout=60,
                connect=connector,
                server_settings={"application_name": APPLICATION_NAME},
                reset=keep_session,
            )
        except AddressRefused as exc:
            raise EgressRefused(f"dsn: {exc}") from None
        except Exception as exc:
            text = scrub(dsn, str(exc) or type(exc).__name__)
            message = f"cannot connect to PostgreSQL at {mask_url(dsn)}: {text}"
            if isinstance(
                exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
            ):
                raise SchemaError(message) from None
            raise RetriableError(message) from None

    async def check(self, timeout_seconds: float = 5.0) -> None:
        if self._pool is None:
            raise DestinationError("the postgres destination is not open")
        try:
            async with asyncio.timeout(timeout_seconds), self._pool.acquire() as conn:
                if self._table_ready:  # with createTable, the table may come with the rows
                    await conn.execute(f"SELECT 1 FROM {self._table} LIMIT 0")
        except AddressRefused as exc:
            raise EgressRefused(f"dsn: {exc}") from None
        except (*_CONNECTION_ERRORS, TimeoutError) as exc:
            raise RetriableError(f"PostgreSQL connection lost: {type(exc).__name__}") from exc
        except (*_SCHEMA_ERRORS, asyncpg.PostgresError) as exc:
            raise SchemaError(f"{self._config.table}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def write(self, batch: Batch) -> BatchResult:
        if self._pool is None:
            raise DestinationError("the postgres destination is not open")
        upserts = [self._record(r) for r in batch.rows if r.op != "removed"]
        removals = [self._record(r) for r in batch.rows if r.op == "removed"]
        statements = self._statements(upserts, removals)
        try:
            async with self._pool.acquire() as conn:
                if not self._table_ready:
                    await self._create_table(conn, upserts or removals)
                try:
                    if len(statements) == 1:  # atomic on its own: no BEGIN and COMMIT trips
                        await conn.execute(*statements[0])
                    else:
                        async with conn.transaction():
                            await self._write_all(conn, statements)
                    return BatchResult()
                except (*_SCHEMA_ERRORS, *_CONNECTION_ERRORS):
                    raise
                except asyncpg.PostgresError:
                    pass  # a row the table refuses: find it below
                return await self._row_by_row(conn, batch.rows)
        except AddressRefused as exc:
            raise EgressRefused(f"dsn: {exc}") from None
        except _CONNECTION_ERRORS as exc:
            raise RetriableError(f"PostgreSQL connection lost: {type(exc).__name__}") from exc
        except _SCHEMA_ERRORS as exc:
            raise SchemaError(f"{self._config.table}: {exc}") from exc
        except asyncpg.PostgresError as exc:
            if "no unique or exclusion constraint" in str(exc):
                raise SchemaError(
                    f"{self._config.table}: {self._key} needs a unique index"
                ) from exc
            raise

    def _record(self, row: RowChange) -> dict[str, Any]:
        if self._key in row.data:
            return row.data
        return {**row.data, self._key: row.key}

    def _statements(
        self, upserts: list[dict[str, Any]], removals: list[dict[str, Any]]
    ) -> list[tuple[str, str]]:
        """(SQL, JSON parameter): one statement per operation (more when the rows exceed
        `batchBytes`). Measured against binary COPY into a temporary table and a prepared
        executemany (`python -m bench.pgupsert`), one JSON parameter was the fastest on the
        server and cost the least CPU in this process."""
        statements: list[tuple[str, str]] = []
        if upserts:
            sql = self._upsert_sql(upserts)
            statements.extend((sql, chunk) for chunk in self._json_chunks(upserts))
        if removals:
            sql = self._delete_sql()
            statements.extend((sql, chunk) for chunk in self._json_chunks(removals))
        return statements

    @staticmethod
    async def _write_all(conn: asyncpg.Connection, statements: list[tuple[str, str]]) -> None:
        for sql, parameter in statements:
            await conn.execute(sql, parameter)

    def _json_chunks(self, records: list[dict[str, Any]]) -> list[str]:
        """The records as JSON arrays of at most `batchBytes` each (a larger row alone)."""
        whole = orjson.dumps(records)
        limit = self._config.batch_bytes
        if len(whole) <= limit or len(records) == 1:
            return [whole.decode()]
        chunks: list[str] = []
        parts: list[bytes] = []
        size = 2
        for record in records:
            part = orjson.dumps(record)
            if parts and size + len(part) + 1 > limit:
                chunks.append(f"[{b','.join(parts).decode()}]")
                parts, size = [], 2
            parts.append(part)
            size += len(part) + 1
        chunks.append(f"[{b','.join(parts).decode()}]")
        return chunks

    async def _row_by_row(self, conn: asyncpg.Connection, rows: list[RowChange]) -> BatchResult:
        """The rows the table refuses, found by writing halves of the batch in savepoints:
        a few bad rows in a large batch cost a few statements each, not one per row."""
        async with conn.transaction():
            rejected = await self._isolate(conn, rows)
        return BatchResult(rejected)

    async def _isolate(self, conn: asyncpg.Connection, rows: list[RowChange]) -> dict[str, str]:
        middle = len(rows) // 2
        rejected: dict[str, str] = {}
        for half in (rows[:middle], rows[middle:]) if middle else (rows,):
            try:
                async with conn.transaction():  # a savepoint
                    await self._write_all(
                        conn,
                        self._statements(
                            [self._record(r) for r in half if r.op != "removed"],
                            [self._record(r) for r in half if r.op == "removed"],
                        ),
                    )
            except (*_SCHEMA_ERRORS, *_CONNECTION_ERRORS):
                raise
            except asyncpg.PostgresError as exc:
                if len(half) == 1:
                    rejected[half[0].key] = f"{type(exc).__name__}: {exc}"[:300]
                else:
                    rejected.update(await self._isolate(conn, half))
        return rejected

    def _upsert_sql(self, records: list[dict[str, Any]]) -> str:
        columns = sorted(set().union(*records))
        for column in columns:
            if not _IDENTIFIER.match(column):
                raise SchemaError(f"{column!r} cannot be a column name")
        names = ", ".join(f'"{c}"' for c in columns)
        updates = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in columns if c != self._key)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        return (
            f"INSERT INTO {self._table} ({names}) "
            f"SELECT {names} FROM json_populate_recordset(NULL::{self._table}, $1::json) "
            f'ON CONFLICT ("{self._key}") {action}'
        )

    def _delete_sql(self) -> str:
        return (
            f"DELETE FROM {self._table} t "
            f"USING json_populate_recordset(NULL::{self._table}, $1::json) r "
            f'WHERE t."{self._key}" = r."{self._key}"'
        )

    async def _create_table(self, conn: asyncpg.Connection, records: list[dict[str, Any]]) -> None:
        """CREATE TABLE IF NOT EXISTS, with column types guessed from the first rows."""
        types: dict[str, str] = {}
        for record in records:
            for column, value in record.items():
                if value is not None and column not in types:
                    types[column] = _column_type(value)
                types.setdefault(column, "text")
        for column in types:
            if not _IDENTIFIER.match(column):
                raise SchemaError(f"{column!r} cannot be a column name")
        columns = ", ".join(
            f'"{c}" {t}{" PRIMARY KEY" if c == self._key else ""}' for c, t in types.items()
        )
        if self._key not in types:
            columns = f'"{self._key}" text PRIMARY KEY, {columns}'
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {self._table} ({columns})")
        self._table_ready = True
