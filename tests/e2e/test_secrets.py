"""No secret and no token anywhere a user or operator can read: a whole run of the service at
DEBUG (deliveries that succeed and fail, API calls with good and bad tokens, a destination
test, a dbt Cloud webhook with a bad signature), then its log, its status events, its
metrics and every API answer are searched for each secret and token used."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Harness, resources
from tests.e2e.test_service import read_topic, user
from tests.support import wait_for

pytestmark = pytest.mark.kafka

POSTGRES_HOSTPORT = os.environ.get("PG_HOSTPORT", f"127.0.0.1:{os.environ.get('PG_PORT', '55432')}")

SECRETS = {
    "hmac": "hmac-secret-value-a1b2",
    "header": "header-secret-value-c3d4",
    "pg": "pg-password-value-e5f6",
    "sasl": "sasl-password-value-g7h8",
    "dbt": "dbt-webhook-secret-i9j0",
    "api-secret": "api-created-secret-k1l2",
    "token-one": "token-one-value-m3n4",
    "token-two": "token-two-value-o5p6",  # configured as its digest only
}


def digest(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def catalog(receiver_url: str, kafka: str) -> dict[str, Any]:
    data = resources(receiver_url, secret=SECRETS["hmac"], headers={"X-Api-Key": SECRETS["header"]})
    data["destinations"] += [
        {
            "id": "2",
            "name": "warehouse",
            "slug": "warehouse",
            "type": "postgres",
            "configuration": {
                "dsn": f"postgresql://sync:{SECRETS['pg']}@{POSTGRES_HOSTPORT}/sync",
                "table": "secrets_check",
            },
        },
        {
            "id": "3",
            "name": "stream",
            "slug": "stream",
            "type": "kafka",
            "configuration": {
                "topic": "secrets-check",
                # Another cluster by name: the SASL handshake fails on a plain-text broker.
                "bootstrapServers": "localhost:" + kafka.rsplit(":", 1)[1],
                "securityProtocol": "SASL_PLAINTEXT",
                "saslMechanism": "PLAIN",
                "saslUsername": "sync",
                "saslPassword": SECRETS["sasl"],
            },
        },
    ]
    first = data["syncs"][0]
    data["syncs"] += [
        {**first, "id": "2", "slug": "users-to-warehouse", "destinationId": "2"},
        {**first, "id": "3", "slug": "users-to-stream", "destinationId": "3"},
    ]
    return data


async def test_no_secret_or_token_in_log_status_events_metrics_or_api(e2e: Harness) -> None:
    e2e.write_resources(catalog(e2e.receiver.url, e2e.kafka))
    e2e.env["SYNC_API_TOKENS"] = f"{SECRETS['token-one']}=1,{digest(SECRETS['token-two'])}=2"
    e2e.env["SYNC_DBT_CLOUD_WEBHOOK_SECRET"] = SECRETS["dbt"]
    e2e.env["SYNC_LOG_LEVEL"] = "DEBUG"
    e2e.receiver.replies = [(401, {"message": "bad key"}, {})]
    service = await e2e.service()
    await e2e.event("upsert", [user(1), user(2)])
    await wait_for(
        lambda: service.metric("sync_runs_total", {"status": "failed"}), what="a failed run"
    )
    await e2e.event("upsert", [user(3)])
    await e2e.receiver.wait_rows(1)

    seen: list[str] = []
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, token: str, body: Any = None) -> int:
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{service.base}/api/v1{path}"
            async with session.request(method, url, headers=headers, json=body) as r:
                seen.append(f"{method} {path} {r.status} {await r.text()}")
                return r.status

        one, two = SECRETS["token-one"], SECRETS["token-two"]
        assert await call("GET", "/destinations", one) == 200
        for sync in ("1", "2", "3"):
            await call("GET", f"/syncs/{sync}/runs", one)
            await call("GET", f"/syncs/{sync}/rows?status=failed", one)
            await call("GET", f"/syncs/{sync}/rows", one)
        for destination in ("1", "2", "3"):
            await call("POST", f"/destinations/{destination}/test", one)
        assert await call("GET", "/destinations", two) == 200  # the digest admits the token
        assert await call("GET", "/destinations", "wrong-token-value") == 401
        assert await call("GET", "/destinations", digest(two)) == 401
        created = {
            "name": "other",
            "slug": "other",
            "type": "webhook",
            "configuration": {
                "url": e2e.receiver.url,
                "secret": SECRETS["api-secret"],
                "headers": {"Authorization": f"Bearer {SECRETS['api-secret']}"},
            },
        }
        await call("POST", "/destinations", two, created)
        await call("POST", "/destinations", two, {**created, "slug": "bad", "type": "nope"})
        await call("GET", "/destinations", two)
        async with session.post(
            f"{service.base}/api/v1/webhooks/dbt-cloud",
            data=b"{}",
            headers={"Authorization": "bad-signature"},
        ) as r:
            seen.append(f"dbt {r.status} {await r.text()}")
        async with session.get(f"{service.base}/metrics") as r:
            seen.append(await r.text())
    events = await read_topic(e2e.kafka, e2e.status_topic, 8)
    assert events, "no status events"
    seen.extend(bytes(e.value).decode() for e in events)
    assert await service.stop() == 0
    log = service.log_path.read_text()

    assert "DEBUG" in log  # the log was at DEBUG
    # Failures were recorded, just not the secrets.
    assert "HTTP 401" in log
    assert "password authentication failed" in log
    assert "sync 3 run" in log
    for name, secret in SECRETS.items():
        assert secret not in log, f"the {name} secret is in the log"
        for text in seen:
            assert secret not in text, f"the {name} secret was shown: {text[:200]}"
