"""Every API route through a real HTTP client against a live service, on both stores."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from tests.api.conftest import DBT_SECRET, Service
from tests.support import SYNC_FIELDS, Receiver, wait_for

pytestmark = pytest.mark.kafka

MAPPINGS = [{"from": "id", "to": "id"}, {"from": "email", "to": "email_address"}]


async def make_catalog(service: Service, url: str, schedule: dict[str, Any] | None = None) -> str:
    status, model = await service.one.call(
        "POST", "/models", {"name": "users", "slug": "users", "primaryKey": "id"}
    )
    assert status == 200, model
    status, dest = await service.one.call(
        "POST",
        "/destinations",
        {
            "name": "crm",
            "slug": "crm",
            "type": "webhook",
            "configuration": {"url": url, "secret": "hmac-secret", "headers": {"X-Key": "k1"}},
        },
    )
    assert status == 200, dest
    status, sync = await service.one.call(
        "POST",
        "/syncs",
        {
            "slug": "users-to-crm",
            "modelId": model["id"],
            "destinationId": dest["id"],
            "schedule": schedule or {"type": "manual"},
            "configuration": {"mode": "mirror", "mappings": MAPPINGS},
        },
    )
    assert status == 200, sync
    return sync["id"]


async def test_requests_without_a_valid_token_are_refused(service: Service) -> None:
    for path in ("/syncs", "/models", "/destinations", "/sources", "/openapi.json"):
        status, body = await service.anonymous.call("GET", path)
        assert status == 401
        assert body["message"] == "Authentication error"
    service.anonymous.headers = {"Authorization": "Bearer not-a-known-token"}
    status, _ = await service.anonymous.call("GET", "/syncs")
    assert status == 401


async def test_create_sync_fills_server_fields(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url)
    status, sync = await service.one.call("GET", f"/syncs/{sync_id}")
    assert status == 200
    assert sync["primaryKey"] == "id"
    assert sync["referencedColumns"] == ["id", "email"]
    assert sync["status"] == "pending"
    assert sync["workspaceId"] == "1"
    assert sync["lastRunAt"] is None
    assert set(sync) == SYNC_FIELDS


async def test_lists_filter_order_and_page(service: Service, receiver: Receiver) -> None:
    for i in range(3):
        status, _ = await service.one.call(
            "POST", "/models", {"name": f"m{i}", "slug": f"model-{i}", "primaryKey": "id"}
        )
        assert status == 200
    status, page = await service.one.call("GET", "/models", limit=2)
    assert status == 200
    assert [m["slug"] for m in page["data"]] == ["model-0", "model-1"]
    assert page["hasMore"] is True
    _, page = await service.one.call("GET", "/models", limit=2, offset=2)
    assert [m["slug"] for m in page["data"]] == ["model-2"]
    assert page["hasMore"] is False
    _, page = await service.one.call("GET", "/models", slug="model-1")
    assert [m["name"] for m in page["data"]] == ["m1"]
    _, page = await service.one.call("GET", "/models", orderBy="name", name="m2")
    assert len(page["data"]) == 1
    status, body = await service.one.call("GET", "/models", orderBy="colour")
    assert status == 422
    assert "orderBy" in body["details"]

    sync_id = await make_catalog(service, receiver.url)
    _, page = await service.one.call("GET", "/syncs", slug="users-to-crm")
    assert [s["id"] for s in page["data"]] == [sync_id]
    _, page = await service.one.call("GET", "/syncs", modelId="999")
    assert page["data"] == []


async def test_other_workspaces_see_nothing(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url)
    for path in (f"/syncs/{sync_id}", "/models/1", "/destinations/1", f"/syncs/{sync_id}/runs"):
        status, body = await service.two.call("GET", path)
        assert status == 404, path
        assert body["message"] == "Not found"
    for path in ("/syncs", "/models", "/destinations", "/sources"):
        status, body = await service.two.call("GET", path)
        assert status == 200
        assert body == {"data": [], "hasMore": False}
    status, _ = await service.two.call("PATCH", f"/syncs/{sync_id}", {"disabled": True})
    assert status == 404
    status, _ = await service.two.call("POST", f"/syncs/{sync_id}/trigger", {})
    assert status == 404
    status, _ = await service.two.call("DELETE", "/models/1")
    assert status == 404
    # Another workspace may reuse a slug.
    status, _ = await service.two.call(
        "POST", "/models", {"name": "users", "slug": "users", "primaryKey": "id"}
    )
    assert status == 200


async def test_destination_secrets_are_masked_and_kept(
    service: Service, receiver: Receiver
) -> None:
    await make_catalog(service, receiver.url)
    status, dest = await service.one.call("GET", "/destinations/1")
    assert status == 200
    assert dest["configuration"]["secret"] == "********"
    assert dest["configuration"]["headers"] == {"X-Key": "********"}
    _, page = await service.one.call("GET", "/destinations")
    assert "hmac-secret" not in orjson.dumps(page).decode()
    # Sending the masked value back keeps the stored secret.
    changed = {**dest["configuration"], "batchSize": 10}
    status, dest = await service.one.call("PATCH", "/destinations/1", {"configuration": changed})
    assert status == 200
    assert dest["configuration"]["batchSize"] == 10
    status, _run = await service.one.call("POST", "/syncs/1/trigger", {})
    assert status == 200


async def test_validation_errors_name_the_field(service: Service, receiver: Receiver) -> None:
    status, body = await service.one.call(
        "POST",
        "/syncs",
        {
            "slug": "s",
            "modelId": "41",
            "destinationId": "42",
            "schedule": {"type": "manual"},
            "configuration": {"mappings": MAPPINGS},
        },
    )
    assert status == 422
    assert body["message"] == "Validation failed"
    assert set(body["details"]) == {"modelId", "destinationId"}

    await make_catalog(service, receiver.url)
    bad_bodies = {
        "schedule": {"type": "interval", "schedule": {"interval": {"quantity": 1, "unit": "year"}}},
        "configuration.mappings": [],
    }
    status, body = await service.one.call(
        "POST",
        "/syncs",
        {
            "slug": "s2",
            "modelId": "1",
            "destinationId": "1",
            "schedule": bad_bodies["schedule"],
            "configuration": {"mappings": MAPPINGS},
        },
    )
    assert status == 422
    assert any(k.startswith("schedule") for k in body["details"])
    status, body = await service.one.call(
        "POST",
        "/syncs",
        {
            "slug": "s3",
            "modelId": "1",
            "destinationId": "1",
            "schedule": {"type": "manual"},
            "configuration": {"mappings": []},
        },
    )
    assert status == 422
    assert any(k.startswith("configuration.mappings") for k in body["details"])
    status, body = await service.one.call(
        "POST",
        "/destinations",
        {"name": "x", "slug": "x", "type": "webhook", "configuration": {"url": "not a url"}},
    )
    assert status == 422
    assert "configuration.url" in body["details"]
    status, body = await service.one.call(
        "POST", "/destinations", {"name": "x", "slug": "x", "type": "fax", "configuration": {}}
    )
    assert status == 422
    assert "type" in body["details"]
    status, body = await service.one.call(
        "POST", "/models", {"name": "users", "slug": "users", "primaryKey": "id"}
    )
    assert status == 409
    assert body == {"message": "Validation failed", "details": {"slug": body["details"]["slug"]}}


async def test_malformed_and_oversized_bodies(service: Service) -> None:
    status, body = await service.one.call("POST", "/models", raw=b"{not json")
    assert status == 400
    assert "JSON" in body["details"]
    status, body = await service.one.call("POST", "/models", raw=b"[1, 2]")
    assert status == 400
    status, body = await service.one.call("POST", "/models", raw=b"{" + b" " * 70_000 + b"}")
    assert status == 413
    assert body["message"] == "Request too large"


async def test_delete_refuses_while_referenced(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url)
    status, body = await service.one.call("DELETE", "/models/1")
    assert status == 409
    assert "modelId" in body["details"]
    status, _ = await service.one.call("DELETE", "/destinations/1")
    assert status == 409
    status, _ = await service.one.call("DELETE", f"/syncs/{sync_id}")
    assert status == 204
    status, _ = await service.one.call("GET", f"/syncs/{sync_id}")
    assert status == 404
    assert (await service.one.call("DELETE", "/models/1"))[0] == 204
    assert (await service.one.call("DELETE", "/destinations/1"))[0] == 204
    assert (await service.one.call("DELETE", "/destinations/1"))[0] == 404


async def test_sources_crud_and_reference(service: Service) -> None:
    status, source = await service.one.call(
        "POST",
        "/sources",
        {
            "name": "orders",
            "slug": "orders",
            "type": "kafka",
            "configuration": {"topic": "orders-cdc"},
        },
    )
    assert status == 200
    assert source["configuration"] == {"topic": "orders-cdc"}
    status, _body = await service.one.call(
        "POST", "/sources", {"name": "x", "slug": "x", "configuration": {"topic": "bad topic!"}}
    )
    assert status == 422
    status, _model = await service.one.call(
        "POST",
        "/models",
        {"name": "orders", "slug": "orders", "primaryKey": "id", "sourceId": source["id"]},
    )
    assert status == 200
    status, _ = await service.one.call(
        "POST", "/models", {"name": "o2", "slug": "o2", "primaryKey": "id", "sourceId": "77"}
    )
    assert status == 422
    status, patched = await service.one.call(
        "PATCH", f"/sources/{source['id']}", {"name": "orders v2"}
    )
    assert status == 200
    assert patched["name"] == "orders v2"
    assert patched["configuration"] == {"topic": "orders-cdc"}
    status, _ = await service.one.call("DELETE", f"/sources/{source['id']}")
    assert status == 409
    _, listed = await service.one.call("GET", "/sources")
    assert [s["slug"] for s in listed["data"]] == ["orders"]


async def test_manual_sync_runs_only_when_triggered(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url)
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 2, "email": "b@x"}]})
    await wait_for(lambda: service.metric_at_least("sync_rows_ingested_total", 2), what="ingest")
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs")
    assert runs["data"] == []
    assert receiver.rows == []

    status, answer = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    assert status == 200
    run_id = answer["id"]
    await receiver.wait_rows(2)
    await wait_for(lambda: run_finished(service, sync_id, run_id), what="run to finish")
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", runId=run_id)
    (run,) = runs["data"]
    assert run["status"] == "success"
    assert run["plannedRows"] == {"addedCount": 2, "changedCount": 0, "removedCount": 0}
    assert run["successfulRows"]["addedCount"] == 2
    assert run["startedAt"] is not None
    assert run["finishedAt"] is not None
    _, sync = await service.one.call("GET", f"/syncs/{sync_id}")
    assert sync["status"] == "success"
    assert sync["lastRunAt"] is not None

    status, answer = await service.one.call(
        "POST", "/syncs/trigger", {"syncSlug": "users-to-crm", "fullResync": True}
    )
    assert status == 200
    assert answer["id"] != run_id
    await wait_for(lambda: run_finished(service, sync_id, answer["id"]), what="second run")
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", orderBy="createdAt")
    assert [r["id"] for r in runs["data"]] == [answer["id"], run_id]
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", limit=1)
    assert runs["hasMore"] is True
    status, _ = await service.one.call("POST", "/syncs/trigger", {"syncSlug": "nope"})
    assert status == 404


async def test_sync_created_through_the_api_receives_events_at_once(
    service: Service, receiver: Receiver
) -> None:
    await make_catalog(service, receiver.url, {"type": "continuous", "schedule": {"lingerMs": 20}})
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    rows = await receiver.wait_rows(1)
    assert rows[0]["data"] == {"id": 1, "email_address": "a@x"}


async def test_disabled_sync_is_not_run(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url, {"type": "continuous", "schedule": {}})
    status, sync = await service.one.call("PATCH", f"/syncs/{sync_id}", {"disabled": True})
    assert status == 200
    assert sync["status"] == "disabled"
    assert sync["disabled"] is True
    status, _body = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    assert status == 422
    await asyncio.sleep(1.2)  # the pipeline picks up catalog changes within a second
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    await wait_for(lambda: service.metric_at_least("sync_events_unrouted_total", 1), what="skip")
    assert receiver.rows == []
    status, sync = await service.one.call("PATCH", f"/syncs/{sync_id}", {"disabled": False})
    assert sync["status"] == "pending"
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 2, "email": "b@x"}]})
    await receiver.wait_rows(1)


async def test_cancel_queued_and_running_runs(service: Service, receiver: Receiver) -> None:
    sync_id = await make_catalog(service, receiver.url)
    receiver.delay = 30.0  # the first delivery hangs
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    await wait_for(lambda: service.metric_at_least("sync_rows_ingested_total", 1), what="ingest")
    _, first = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    await wait_for(lambda: len(receiver.requests) == 1, what="delivery to start")
    _, second = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    _, third = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {"fullResync": True})
    assert second["id"] == third["id"] != first["id"]  # triggers during a run coalesce

    status, run = await service.one.call("POST", f"/syncs/{sync_id}/runs/{second['id']}/cancel")
    assert status == 200
    assert run["status"] == "cancelled"
    status, run = await service.one.call("POST", f"/syncs/{sync_id}/runs/{first['id']}/cancel")
    assert status == 200
    await wait_for(lambda: run_status(service, sync_id, first["id"], "cancelled"), what="cancel")
    status, _body = await service.one.call("POST", f"/syncs/{sync_id}/runs/{first['id']}/cancel")
    assert status == 409
    status, _ = await service.one.call("POST", f"/syncs/{sync_id}/runs/999/cancel")
    assert status == 404
    # The row was never delivered: it is still pending and goes in the next run.
    receiver.delay = 0.0
    _, fourth = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    await wait_for(lambda: run_status(service, sync_id, fourth["id"], "success"), what="run")
    assert [r["key"] for r in receiver.rows] == ["1"]


async def run_status(service: Service, sync_id: str, run_id: str, status: str) -> bool:
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", runId=run_id)
    return bool(runs["data"]) and runs["data"][0]["status"] == status


async def run_finished(service: Service, sync_id: str, run_id: str) -> bool:
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", runId=run_id)
    return bool(runs["data"]) and runs["data"][0]["finishedAt"] is not None


async def test_a_source_added_through_the_api_is_consumed(
    service: Service, receiver: Receiver
) -> None:
    topic = f"{service.topic}-orders"
    status, source = await service.one.call(
        "POST",
        "/sources",
        {"name": "orders", "slug": "orders", "type": "kafka", "configuration": {"topic": topic}},
    )
    assert status == 200
    _, model = await service.one.call(
        "POST",
        "/models",
        {"name": "orders", "slug": "orders", "primaryKey": "id", "sourceId": source["id"]},
    )
    _, dest = await service.one.call(
        "POST",
        "/destinations",
        {"name": "crm", "slug": "crm", "type": "webhook", "configuration": {"url": receiver.url}},
    )
    status, _ = await service.one.call(
        "POST",
        "/syncs",
        {
            "slug": "orders",
            "modelId": model["id"],
            "destinationId": dest["id"],
            "schedule": {"type": "continuous", "schedule": {"lingerMs": 10}},
            "configuration": {"mappings": [{"from": "id", "to": "id"}]},
        },
    )
    assert status == 200
    event = {"modelId": model["id"], "op": "upsert", "rows": [{"id": 7}]}
    await service.producer.send_and_wait(topic, orjson.dumps(event), key=model["id"].encode())
    rows = await receiver.wait_rows(1, timeout=30)
    assert rows[0]["key"] == "7"


async def test_dbt_cloud_job_success_triggers_its_syncs(
    service: Service, receiver: Receiver
) -> None:
    schedule = {
        "type": "dbt-cloud",
        "schedule": {"account": {"id": "43"}, "job": {"id": "7"}, "dbtCredentialId": "1"},
    }
    sync_id = await make_catalog(service, receiver.url, schedule)
    await service.produce({"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}]})
    await wait_for(lambda: service.metric_at_least("sync_rows_ingested_total", 1), what="ingest")

    async def post(event: dict[str, Any], secret: str = DBT_SECRET) -> tuple[int, Any]:
        body = orjson.dumps(event)
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        async with service.session.post(
            f"{service.base}/api/v1/webhooks/dbt-cloud",
            data=body,
            headers={"Authorization": signature, "Content-Type": "application/json"},
        ) as r:
            return r.status, await r.json()

    def run(status_code: int, job: int = 7) -> dict[str, Any]:
        return {
            "eventType": "job.run.completed",
            "data": {
                "accountId": "43",
                "jobId": str(job),
                "runStatusCode": status_code,
                "runStatus": "Success" if status_code == 10 else "Errored",
            },
        }

    status, body = await post(run(10), secret="wrong")
    assert status == 401
    status, body = await post(run(20))
    assert (status, body) == (200, {"triggered": []})
    status, body = await post(run(10, job=8))
    assert (status, body) == (200, {"triggered": []})
    assert receiver.rows == []
    status, body = await post(run(10))
    assert status == 200
    assert [t["syncId"] for t in body["triggered"]] == [sync_id]
    await receiver.wait_rows(1)
    await wait_for(
        lambda: run_finished(service, sync_id, body["triggered"][0]["runId"]), what="run"
    )


async def test_refused_rows_are_listed_with_their_reason(
    service: Service, receiver: Receiver
) -> None:
    sync_id = await make_catalog(service, receiver.url)
    receiver.default = (400, {"message": "email is required"}, {})
    await service.produce(
        {"modelId": "1", "op": "upsert", "rows": [{"id": 1}, {"id": 2, "email": "b@x"}]}
    )
    await wait_for(lambda: service.metric_at_least("sync_rows_ingested_total", 2), what="ingest")
    _, answer = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    await wait_for(
        lambda: run_status(service, sync_id, answer["id"], "warning"), what="a warning run"
    )

    status, rows = await service.one.call("GET", f"/syncs/{sync_id}/rows", status="failed")
    assert status == 200
    assert [r["key"] for r in rows["data"]] == ["1", "2"]
    first = rows["data"][0]
    assert first["operation"] == "upsert"
    assert first["attempts"] == 1
    assert "HTTP 400" in first["error"] and "email is required" in first["error"]
    assert first["lastAttemptAt"] is not None
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", runId=answer["id"])
    assert runs["data"][0]["failedRows"]["addedCount"] == 2
    status, _ = await service.two.call("GET", f"/syncs/{sync_id}/rows")
    assert status == 404

    # resetCDC: take what is pending as synced; nothing is sent and nothing stays pending.
    receiver.default = (200, {}, {})
    _, answer = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {"resetCDC": True})
    await wait_for(lambda: run_status(service, sync_id, answer["id"], "success"), what="reset")
    assert receiver.rows == []
    _, rows = await service.one.call("GET", f"/syncs/{sync_id}/rows", status="pending")
    assert rows == {"data": [], "hasMore": False}


async def test_rows_without_a_key_are_rejected_counted_and_listed(
    service: Service, receiver: Receiver
) -> None:
    sync_id = await make_catalog(service, receiver.url)
    event = {"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": "a@x"}, {"email": "b@x"}]}
    await service.produce(event)
    await wait_for(lambda: service.metric_at_least("sync_rows_ingested_total", 1), what="ingest")
    _, answer = await service.one.call("POST", f"/syncs/{sync_id}/trigger", {})
    await wait_for(lambda: run_status(service, sync_id, answer["id"], "warning"), what="the run")
    _, runs = await service.one.call("GET", f"/syncs/{sync_id}/runs", runId=answer["id"])
    assert runs["data"][0]["failedRows"]["addedCount"] == 1
    assert runs["data"][0]["successfulRows"]["addedCount"] == 1
    status, rows = await service.one.call("GET", f"/syncs/{sync_id}/rows", status="rejected")
    assert status == 200
    (rejected,) = rows["data"]
    assert rejected["key"] is None
    assert "primary key" in rejected["error"]
    assert rejected["row"] == {"email": "b@x"}


async def test_a_destination_can_be_checked(service: Service, receiver: Receiver) -> None:
    await make_catalog(service, receiver.url)
    status, body = await service.one.call("POST", "/destinations/1/test")
    assert (status, body) == (200, {"ok": True, "error": None})
    assert receiver.rows == []  # a HEAD request, not a delivery
    assert [r.body for r in receiver.requests] == [b""]
    _, dead = await service.one.call(
        "POST",
        "/destinations",
        {
            "name": "gone",
            "slug": "gone",
            "type": "webhook",
            "configuration": {"url": "http://127.0.0.1:9/hook"},
        },
    )
    status, body = await service.one.call("POST", f"/destinations/{dead['id']}/test")
    assert status == 200
    assert body["ok"] is False
    assert "Connect" in body["error"]
    status, _ = await service.two.call("POST", "/destinations/1/test")
    assert status == 404
