"""The webhook destination: one HTTP request per batch, JSON body, optional HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

from service.core.errors import (
    BatchRejected,
    DestinationAuthError,
    DestinationError,
    RetriableError,
)
from service.core.interfaces import Batch, BatchResult, DestinationWriter

_MAX_RESPONSE_BYTES = 1 << 20
_ERROR_SNIPPET = 300


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


def classify_response(status: int, headers: Any, body: bytes) -> BatchResult:
    """2xx: accepted, less the rows a `{"rejected": [...]}` body names. 408, 429 and 5xx but
    501: retriable. 401/403: credentials refused. Anything else: the batch is refused."""
    if 200 <= status < 300:
        return BatchResult(rejected=_rejected_rows(body))
    snippet = body[:_ERROR_SNIPPET].decode("utf-8", "replace").strip()
    message = f"HTTP {status}" + (f": {snippet}" if snippet else "")
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
            rejected[str(item["key"])] = str(item.get("error") or "rejected by the destination")
    return rejected


class WebhookDestination(DestinationWriter):
    type_name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        self._config = config
        self.batch_size = config.batch_size
        self.max_concurrency = config.max_concurrency
        self.max_requests_per_second = config.max_requests_per_second
        self.max_rows_per_second = config.max_rows_per_second
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        self._headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
        self._key = config.secret.get_secret_value().encode() if config.secret else None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.timeout_seconds),
            connector=aiohttp.TCPConnector(limit=self._config.max_concurrency),
        )

    async def check(self) -> None:
        """Any HTTP answer to a HEAD request means the endpoint is there."""
        if self._session is None:
            raise DestinationError("the webhook destination is not open")
        try:
            async with self._session.head(str(self._config.url), headers=self._headers) as r:
                if r.status in (401, 403):
                    raise DestinationAuthError(f"HTTP {r.status}: credentials refused")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetriableError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc

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
                self._config.method, str(self._config.url), data=body, headers=headers
            ) as response:
                payload = await response.content.read(_MAX_RESPONSE_BYTES)
                return classify_response(response.status, response.headers, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RetriableError(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
