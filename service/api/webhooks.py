"""Inbound webhooks: dbt Cloud's job-run notification triggers the syncs scheduled on it."""

from __future__ import annotations

import hashlib
import hmac
import logging

import orjson
from aiohttp import web
from pydantic import SecretStr

from service.api.http import API_PREFIX, RUNS, STORE, ApiError, json_response
from service.core.models import DbtCloudSchedule, Sync

log = logging.getLogger(__name__)

DBT_CLOUD_PATH = f"{API_PREFIX}/webhooks/dbt-cloud"
DBT_SECRET = web.AppKey("dbt_cloud_secret", SecretStr)

#: dbt Cloud's status code of a run that succeeded.
_DBT_SUCCESS = 10


def _matches(sync: Sync, account_id: str, job_id: str) -> bool:
    schedule = sync.schedule
    return (
        isinstance(schedule, DbtCloudSchedule)
        and not sync.disabled
        and schedule.schedule.account.id == account_id
        and schedule.schedule.job.id == job_id
    )


async def dbt_cloud(request: web.Request) -> web.Response:
    """Authenticated by the HMAC-SHA256 of the body (hex, in `Authorization`), not a token."""
    secret = request.app.get(DBT_SECRET)
    if secret is None or not secret.get_secret_value():
        raise ApiError(401, "Authentication error", "no dbt Cloud webhook secret is configured")
    body = await request.read()
    expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    presented = request.headers.get("Authorization", "").strip()
    if not hmac.compare_digest(expected.encode(), presented.encode()):
        raise ApiError(401, "Authentication error", "the signature does not match the body")
    try:
        event = orjson.loads(body)
        data = event["data"]
        account_id, job_id = str(data["accountId"]), str(data["jobId"])
        status_code = int(data.get("runStatusCode", 0))
        status = str(data.get("runStatus", ""))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ApiError(400, "Malformed request", "not a dbt Cloud job run event") from None
    completed = event.get("eventType") == "job.run.completed"
    if not completed or (status_code != _DBT_SUCCESS and status.lower() != "success"):
        return json_response({"triggered": []})
    triggered = []
    for sync in await request.app[STORE].list(Sync):
        if _matches(sync, account_id, job_id):
            triggered.append(
                {
                    "syncId": sync.id,
                    "runId": await request.app[RUNS].trigger(sync, full_resync=False),
                }
            )
    log.info("dbt Cloud job %s/%s finished: triggered %d syncs", account_id, job_id, len(triggered))
    return json_response({"triggered": triggered})
