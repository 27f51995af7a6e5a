"""The deployment files keep the promises the README makes about them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "k8s" / "helm" / "sync-service"
#: Settings the chart sets that the service reads once the matching features land; until then
#: pydantic ignores them (extra="ignore"). Each name here is an interface the service owes.
PENDING_SETTINGS = {
    "SYNC_MIGRATE_ON_START",
    "SYNC_GROUP_INSTANCE_ID",
    "SYNC_KAFKA_SECURITY_PROTOCOL",
    "SYNC_KAFKA_SASL_MECHANISM",
    "SYNC_KAFKA_SASL_USERNAME",
    "SYNC_KAFKA_SASL_PASSWORD",
}


def test_dockerfile_needs_no_frontend_and_pins_its_base() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base is not None
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base.group(1))
    assert text.count("FROM ${BASE_IMAGE}") == 2
    # Debian images already have a user named `sync`.
    assert not re.search(r"useradd\b[^\n]*(\\\n[^\n]*)*\ssync\s*$", text, re.M)
    assert "USER 10001:10001" in text


def test_nothing_deploys_a_latest_tag_or_a_secret() -> None:
    files = [ROOT / "docker-compose.yml", *ROOT.glob("k8s/**/*.yaml")]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        assert not re.search(r"image:\s*\S+:latest\b", text), path
        assert not re.search(r"^kind:\s*Secret\s*$", text, re.M), path


def test_compose_runs_the_service_on_postgresql_hardened_and_healthy() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    core = {name for name, s in services.items() if "profiles" not in s}
    assert core == {"kafka", "postgres", "sync-service"}
    assert {n for n, s in services.items() if s.get("profiles") == ["demo"]} == {
        "demo-receiver",
        "demo-producer",
    }
    # `docker compose up --wait` waits for health: every core service has a check.
    for name in core:
        assert services[name]["healthcheck"]["test"], name
    sync = services["sync-service"]
    assert sync["environment"]["SYNC_DATABASE_URL"].startswith("postgresql://")
    assert "/readyz" in " ".join(sync["healthcheck"]["test"])
    assert sync["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    assert sync["read_only"] is True
    assert sync["cap_drop"] == ["ALL"]
    assert sync["user"] == "10001:10001"
    # No usable default token: an unset SYNC_API_TOKENS stops compose.
    assert ":?" in sync["environment"]["SYNC_API_TOKENS"]
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]


def test_every_setting_the_chart_passes_is_one_the_service_reads() -> None:
    text = "\n".join(p.read_text() for p in (CHART / "templates").glob("*.yaml"))
    used = set(re.findall(r"\bSYNC_[A-Z0-9_]*[A-Z0-9]\b", text))
    known = {f"SYNC_{name.upper()}" for name in Settings.model_fields}
    assert {"SYNC_KAFKA_BOOTSTRAP_SERVERS", "SYNC_TOPIC_REPLICATION_FACTOR"} <= used
    assert used - known <= PENDING_SETTINGS, sorted(used - known - PENDING_SETTINGS)


def test_values_examples_name_secrets_instead_of_holding_them() -> None:
    for path in (ROOT / "k8s" / "examples").glob("values-*.yaml"):
        values = yaml.safe_load(path.read_text())
        assert values["apiTokens"]["existingSecret"], path
        assert not re.search(r"(?i)password|token\s*=", path.read_text().split("apiTokens")[0])
        tag = str(values["image"]["tag"])
        assert tag and tag != "latest", path
