"""Drive sync-service with Hightouch's own Python SDK (`pip install hightouch==1.31.0`), unchanged.

The SDK pins old dependencies, so give it a virtual environment of its own:

    python3 -m venv /tmp/ht && /tmp/ht/bin/pip install hightouch==1.31.0
    SYNC_API_TOKENS=example-token-1=1 .venv/bin/sync-service serve &
    /tmp/ht/bin/python -W ignore examples/hightouch_sdk.py \
        http://127.0.0.1:8080/api/v1 example-token-1
"""

from __future__ import annotations

import sys
import time

from hightouch import Hightouch
from hightouch.models import operations, shared


def main(server_url: str, token: str) -> None:
    client = Hightouch(server_url=server_url)

    def auth(security: type) -> object:
        return security(bearer_auth=token)

    source = client.create_source(
        shared.SourceCreate(
            configuration={"topic": "orders-cdc"}, name="orders", slug="orders", type="kafka"
        ),
        auth(operations.CreateSourceSecurity),
    ).create_source_200_application_json_any_of
    model = client.create_model(
        shared.ModelCreate(
            is_schema=False,
            name="orders",
            primary_key="id",
            query_type="raw_sql",
            slug="orders",
            source_id=source["id"],
            raw=shared.ModelCreateRaw(sql="-- fed by change events"),
        ),
        auth(operations.CreateModelSecurity),
    ).create_model_200_application_json_any_of
    destination = client.create_destination(
        shared.DestinationCreate(
            configuration={"url": "http://127.0.0.1:8099/hook", "secret": "s3cret"},
            name="crm",
            slug="crm",
            type="webhook",
        ),
        auth(operations.CreateDestinationSecurity),
    ).create_destination_200_application_json_any_of
    sync = client.create_sync(
        shared.SyncCreate(
            configuration={"mode": "upsert", "mappings": [{"from": "id", "to": "id"}]},
            destination_id=destination["id"],
            disabled=False,
            model_id=model["id"],
            schedule=shared.SyncCreateSchedule(schedule=None, type="manual"),
            slug="orders-to-crm",
        ),
        auth(operations.CreateSyncSecurity),
    ).create_sync_200_application_json_any_of
    print("created sync", sync["id"], "reading", sync["referencedColumns"])

    run = client.trigger_run(
        operations.TriggerRunRequest(
            trigger_run_input=shared.TriggerRunInput(full_resync=False), sync_id=sync["id"]
        ),
        auth(operations.TriggerRunSecurity),
    ).trigger_run_output
    print("triggered run", run.id)
    time.sleep(1)
    runs = client.list_sync_runs(
        operations.ListSyncRunsRequest(sync_id=float(sync["id"])),
        auth(operations.ListSyncRunsSecurity),
    ).list_sync_runs_200_application_json_object
    for r in runs.data:
        print("run", r.id, r.status.value, "planned", r.planned_rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
