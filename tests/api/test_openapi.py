"""The OpenAPI document against the live service: schemathesis generates requests from it;
no answer may be a 5xx and every answer must match the document."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from service import __version__
from service.api.openapi import build_openapi

pytestmark = pytest.mark.kafka

TOKEN = "token-schemathesis"
SYNC_SERVICE = str(Path(sys.executable).parent / "sync-service")
DOCUMENT = build_openapi(__version__)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("openapi")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = folder / "resources.yaml"
    config.write_text(
        "models: [{id: '1', name: users, slug: users, primaryKey: id}]\n"
        "destinations: [{id: '1', name: crm, slug: crm, type: webhook,"
        " configuration: {url: 'http://127.0.0.1:9/hook'}}]\n"
        "syncs: [{id: '1', slug: users-to-crm, modelId: '1', destinationId: '1',"
        " schedule: {type: manual}, configuration: {mappings: [{from: id, to: id}]}}]\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SYNC_")},
        "SYNC_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SYNC_EVENTS_TOPICS": f"openapi-{port}",
        "SYNC_CONSUMER_GROUP": f"openapi-{port}",
        "SYNC_DATABASE_URL": f"sqlite:///{folder / 'store.db'}",
        "SYNC_HTTP_PORT": str(port),
        "SYNC_CONFIG_FILE": str(config),
        "SYNC_API_TOKENS": f"{TOKEN}=1",
        "SYNC_EGRESS_ALLOW": "127.0.0.1/32",  # the resources file's webhook listens there
        "SYNC_LOG_LEVEL": "WARNING",
    }
    log = (folder / "service.log").open("wb")
    proc = subprocess.Popen([SYNC_SERVICE, "serve"], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail((folder / "service.log").read_text()[-3000:])
        time.sleep(0.2)
    yield base
    proc.terminate()
    assert proc.wait(timeout=15) == 0
    log.close()


def test_the_served_document_is_the_generated_one(live: str) -> None:
    request = urllib.request.Request(
        f"{live}/api/v1/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        served = orjson.loads(r.read())
    assert served == orjson.loads(orjson.dumps(DOCUMENT))
    assert served["openapi"] == "3.1.0"


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_document(case: schemathesis.Case, live: str) -> None:
    # Business rules (an unknown modelId is a 422) make "schema-valid" requests fail on
    # purpose, so the data-acceptance checks do not apply; every response check does.
    case.call_and_validate(
        base_url=f"{live}/api/v1",
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
    )
