"""The webhook destination: one HTTP request per batch, JSON body, optional HMAC signature.

Connections obey the egress policy (checked on the resolved address of every connection) and
redirects are never followed: a 3xx fails the batch with its status and `Location`."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic.alias_generators import to_camel

from service.core.errors import (
    BatchRejected,
    DestinationAuthError,
    DestinationError,
    RetriableError,
)
from service.core.interfaces import Batch, BatchResult, DestinationWriter
from service.destinations.egress import (
    EgressPolicy,
    EgressRefused,
    EgressResolver,
    refused_cause,
)

_MAX_RESPONSE_BYTES = 1 << 20
#: What of an error response is kept: enough to tell a validation message, too little to read
#: anything back through a destination.
_ERROR_SNIPPET = 120
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


class WebhookConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    url: AnyHttpUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    secret: SecretStr | None = None
    batch_size: int = Field(default=100, ge=1, le=10_000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    max_requests_per_second: float | None = Field(default=None, gt=0)
    max_rows_per_second: float | None = Field(default=None, gt=0)
    max_concurrency: int = Field(default=16, ge=1, le=256)

    @field_validator("url")
    @classmethod
    def _no_userinfo(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        # `http://a:1@b/` reaches b: credentials go in headers, where they are masked.
        if value.username or value.password:
            raise ValueError("a URL without user:password@; send credentials in headers")
        return value

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if any(c in secret.get_secret_value() for c in "\r\n\0"):
                raise ValueError(f"the value of {name} holds a line break or NUL")
        return value


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RedirectRefused(BatchRejected):
    """A 3xx: redirects are not followed (they could lead anywhere), and every later batch
    would meet the same one, so the run fails and the rows stay pending."""

    fatal = True


def snippet(text: str | bytes, limit: int = _ERROR_SNIPPET) -> str:
    """A short, printable, single-line excerpt of something a destination sent."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", "replace")
    cleaned = _UNPRINTABLE.sub(" ", text).strip()
    return cleaned[:limit] + ("..." if len(cleaned) > limit else "")


def classify_response(status: int, headers: Any, body: bytes) -> BatchResult:
    """2xx: accepted, less the rows a `{"rejected": [...]}` body names. 3xx: not followed.
    408, 429 and 5xx but 501: retriable. 401/403: credentials refused. Anything else: the
    batch is refused."""
    if 200 <= status < 300:
        return BatchResult(rejected=_rejected_rows(body))
    if 300 <= status < 400:
        location = snippet(headers.get("Location") or "", 200)
        raise RedirectRefused(
            f"HTTP {status}: redirect to {location or '(no Location)'} not followed"
        )
    excerpt = snippet(body)
    message = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
    if status in (408, 429) or (status >= 500 and status != 501):
        raise RetriableError(message, retry_after=retry_after_seconds(headers.get("Retry-After")))
    if status in (401, 403):
        raise DestinationAuthError(message)
    raise BatchRejected(message)


def _rejected_rows(body: bytes) -> dict[str, str]:
    if not body.strip():
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict) or not isinstance(parsed.get("rejected"), list):
        return {}
    rejected: dict[str, str] = {}
    for item in parsed["rejected"]:
        if isinstance(item, dict) and item.get("key") is not None:
            reason = snippet(str(item.get("error") or "")) or "rejected by the destination"
            rejected[str(item["key"])] = reason
    return rejected


class WebhookDestination(DestinationWriter):
    type_name = "webhook"

    def __init__(self, config: WebhookConfig, egress: EgressPolicy) -> None:
        self._config = config
        self._egress = egress
        self.batch_size = config.batch_size
        self.max_concurrency = config.max_concurrency
        self.max_requests_per_second = config.max_requests_per_second
        self.max_rows_per_second = config.max_rows_per_second
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        self._headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
        self._key = config.secret.get_secret_value().encode() if config.secret else None

    async def open(self) -> None:
        timeout = self._config.timeout_seconds
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 10.0)),
            connector=aiohttp.TCPConnector(
                limit=self._config.max_concurrency,
                resolver=EgressResolver(self._egress),
                socket_factory=self._egress.socket_factory,
            ),
            trust_env=False,  # a proxy from the environment would connect on our behalf
        )

    async def check(self, timeout_seconds: float = 5.0) -> None:
        """Any HTTP answer to a HEAD request but a redirect means the endpoint is there."""
        if self._session is None:
            raise DestinationError("the webhook destination is not open")
        try:
            async with self._session.head(
                str(self._config.url),
                headers=self._headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_seconds),
            ) as r:
                if r.status in (401, 403):
                    raise DestinationAuthError(f"HTTP {r.status}: credentials refused")
                if 300 <= r.status < 400:
                    classify_response(r.status, r.headers, b"")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._connection_error(exc) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, batch: Batch) -> BatchResult:
        if self._session is None:
            raise DestinationError("the webhook destination is not open")
        body = orjson.dumps(
            {
                "syncId": batch.sync_id,
                "runId": batch.run_id,
                "batchId": batch.batch_id,
                "rows": [row.payload() for row in batch.rows],
            }
        )
        headers = self._headers
        if self._key is not None:
            digest = hmac.new(self._key, body, hashlib.sha256).hexdigest()
            headers = {**headers, "X-Sync-Signature": f"sha256={digest}"}
        try:
            async with self._session.request(
                self._config.method,
                str(self._config.url),
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                payload = await response.content.read(_MAX_RESPONSE_BYTES)
                return classify_response(response.status, response.headers, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._connection_error(exc) from None

    def _connection_error(self, exc: BaseException) -> DestinationError:
        refused = refused_cause(exc)
        if refused is not None:
            return EgressRefused(str(refused))
        if isinstance(exc, TimeoutError):
            return RetriableError("timed out")
        return RetriableError(snippet(f"{type(exc).__name__}: {exc}".rstrip(": "), 200))
