"""The alert rules and the dashboard use only metrics a running service exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import Harness

pytestmark = pytest.mark.kafka

CHART = Path(__file__).resolve().parents[2] / "k8s" / "helm" / "sync-service"
RULES = CHART / "templates" / "prometheusrule.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
#: Series the rules read from elsewhere: Prometheus's own `up`, and kube-state-metrics' ready
#: replicas (the template picks deployment or statefulset).
NOT_OURS = {"up", "kube_deployment_status_replicas_ready", "kube_statefulset_status_replicas_ready"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
METRIC = re.compile(r"\b((?:sync|kube)_[a-z0-9_]*[a-z0-9]|up)(?=\s*[{\[(])")


def series_names(exposition: str) -> set[str]:
    """Every series name a scrape can hold, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def used_names() -> dict[str, set[str]]:
    rules = RULES.read_text().replace("kube_{{ $kind }}_", "kube_deployment_")
    rules += RULES.read_text().replace("kube_{{ $kind }}_", "kube_statefulset_")
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [
        v["query"]["query"]
        for v in dashboard["templating"]["list"]
        if "query" in v and isinstance(v["query"], dict)
    ]
    return {
        "rules": set(METRIC.findall(rules)),
        "dashboard": set(METRIC.findall("\n".join(exprs))),
    }


async def test_rules_and_dashboard_use_only_exported_metrics(e2e: Harness) -> None:
    service = await e2e.service()
    await e2e.event("upsert", [{"id": 1, "email": "a@example.com", "first": "A", "last": "B"}])
    await e2e.produce(b"not json")
    await e2e.receiver.wait_rows(1)
    async with aiohttp.ClientSession() as session, session.get(f"{service.base}/metrics") as r:
        assert r.status == 200
        exported = series_names(await r.text())

    used = used_names()
    # The checks below can fail: both files use the service's own metrics.
    assert {"sync_consumer_lag", "sync_runs_total"} <= used["rules"]
    assert {"sync_event_to_delivery_seconds_bucket", "sync_rows_delivered_total"} <= set(
        used["dashboard"]
    )
    for where, names in used.items():
        unknown = sorted(names - exported - NOT_OURS)
        assert not unknown, f"{where} uses metrics the service does not export: {unknown}"
