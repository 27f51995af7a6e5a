"""Connecting to PostgreSQL: one pool factory for the store and the postgres destination,
with the URL's password kept out of every message."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

#: How the store's sessions show in pg_stat_activity: apart from the destinations' own
#: ("sync-service destination") when both live on one server.
APPLICATION_NAME = "sync-service store"


def _userinfo(url: str) -> tuple[int, int] | None:
    """Start and end of the password in `scheme://user:password@host...`, if there is one."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found >= 0:
            end = min(end, found)
    at = url.rfind("@", start, end)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0:
        return None
    return colon + 1, at


def _secrets(url: str) -> list[str]:
    """The password as written in the URL and decoded: what must never be shown."""
    found: list[str] = []
    span = _userinfo(url)
    if span is not None and span[1] > span[0]:
        found.append(url[span[0] : span[1]])
    for match in re.finditer(r"[?&]password=([^&#]*)", url):
        if match.group(1):
            found.append(match.group(1))
    return [s for raw in found for s in {raw, unquote(raw)} if s]


def mask_url(url: str, mask: str = "***") -> str:
    """The URL with its password (in the user info or a `password=` parameter) masked."""
    span = _userinfo(url)
    if span is not None and span[1] > span[0]:
        url = url[: span[0]] + mask + url[span[1] :]
    return re.sub(r"([?&]password=)[^&#]*", lambda m: m.group(1) + mask, url)


def _ssl_option(url: str) -> tuple[ssl.SSLContext | bool, bool]:
    """What to pass asyncpg as `ssl`, and whether a server that refuses TLS may be used in
    plain text (sslmode allow/prefer, the default). Runs in a worker thread: left to itself,
    asyncpg looks for certificates under ~/.postgresql inside the event loop on every new
    connection. Follows libpq: `sslmode`, `sslrootcert`, `sslcrl`, `sslcert`, `sslkey`,
    `sslpassword` URL parameters, then PGSSL* variables, then files in ~/.postgresql."""
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}

    def setting(name: str, env: str) -> str | None:
        return query.get(name) or os.environ.get(env) or None

    def default_file(name: str) -> str | None:
        try:
            path = Path.home() / ".postgresql" / name
        except (RuntimeError, KeyError):
            return None
        return str(path) if path.is_file() else None

    mode = (setting("sslmode", "PGSSLMODE") or "prefer").lower()
    if mode == "disable":
        return False, False
    if mode not in {"allow", "prefer", "require", "verify-ca", "verify-full"}:
        raise ValueError(f"unknown sslmode {mode!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_NONE
    if mode in {"require", "verify-ca", "verify-full"}:
        root = setting("sslrootcert", "PGSSLROOTCERT") or default_file("root.crt")
        if root is not None:
            context.load_verify_locations(cafile=root)
            context.verify_mode = ssl.CERT_REQUIRED
            crl = setting("sslcrl", "PGSSLCRL") or default_file("root.crl")
            if crl is not None:
                context.load_verify_locations(cafile=crl)
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        elif mode != "require":
            raise ValueError(f"sslmode {mode} needs a root certificate (sslrootcert)")
    cert = setting("sslcert", "PGSSLCERT") or default_file("postgresql.crt")
    if cert is not None:
        key = setting("sslkey", "PGSSLKEY") or default_file("postgresql.key")
        password = query.get("sslpassword") or ""
        context.load_cert_chain(cert, keyfile=key, password=lambda: password)
    return context, mode in {"allow", "prefer"}


def scrub(url: str, text: str) -> str:
    """`text` with the URL's password replaced by `***`."""
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's `reset`: asyncpg still rolls back a transaction left open, but skips its reset
    statement (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL), a round trip and server work
    on every release. The service changes no session state but in its own transactions
    (SET LOCAL), and the store's migration undoes its SET and advisory lock itself."""


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout: float | None = None,
    connect_timeout: float = 60.0,
    statement_timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool on `url`; raises ConnectionError whose message names the masked URL. `connect_timeout`
    bounds each connection attempt; `statement_timeout` has the server cancel any statement
    running longer (both in seconds)."""
    settings = {"application_name": APPLICATION_NAME}
    if statement_timeout is not None:
        settings["statement_timeout"] = str(int(statement_timeout * 1000))
    try:
        tls, plain_ok = await asyncio.to_thread(_ssl_option, url)

        async def pool(option: ssl.SSLContext | bool) -> asyncpg.Pool:
            return await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                ssl=option,
                command_timeout=command_timeout,
                timeout=connect_timeout,
                server_settings=settings,
                reset=keep_session,
            )

        try:
            return await pool(tls)
        except ConnectionError as exc:
            if not (plain_ok and "rejected SSL upgrade" in str(exc)):
                raise
            return await pool(False)  # sslmode prefer: the server has no TLS
    except Exception as exc:
        message = (
            f"cannot connect to PostgreSQL at {mask_url(url)}: {scrub(url, str(exc) or repr(exc))}"
        )
        if any(s in repr(exc) for s in _secrets(url)):
            raise ConnectionError(message) from None
        raise ConnectionError(message) from exc
