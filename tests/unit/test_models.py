"""The catalog models: referenced columns, the Sync wire shape, schedules, configuration."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from service.core.models import (
    ContinuousSchedule,
    CronSchedule,
    DbtCloudSchedule,
    IntervalSchedule,
    ManualSchedule,
    NumericId,
    RunStatus,
    Sync,
    SyncConfiguration,
    SyncSchedule,
    SyncStatus,
    VisualSchedule,
    referenced_columns,
)
from tests.support import SYNC_FIELDS

SCHEDULE = TypeAdapter(SyncSchedule)


def config(*mappings: dict[str, Any], **extra: Any) -> SyncConfiguration:
    return SyncConfiguration.model_validate({"mappings": list(mappings), **extra})


# --- referenced_columns --------------------------------------------------------------------


def test_referenced_columns_start_with_the_primary_key() -> None:
    assert referenced_columns("id", config({"from": "email", "to": "e"})) == ["id", "email"]


def test_referenced_columns_include_template_variables_in_order() -> None:
    cfg = config({"type": "template", "to": "n", "template": "{{ first }} {{ last }}"})
    assert referenced_columns("id", cfg) == ["id", "first", "last"]


def test_referenced_columns_read_the_root_of_a_dotted_template_variable() -> None:
    cfg = config({"type": "template", "to": "n", "template": "{{ address.city | upcase }}"})
    assert referenced_columns("id", cfg) == ["id", "address"]


def test_a_static_mapping_references_no_column() -> None:
    cfg = config({"type": "static", "to": "source", "value": "crm"})
    assert referenced_columns("id", cfg) == ["id"]


def test_referenced_columns_have_no_duplicates() -> None:
    cfg = config(
        {"from": "id", "to": "id"},
        {"from": "email", "to": "email_address"},
        {"from": "email", "to": "email_copy"},
        {"type": "template", "to": "label", "template": "{{ email }} ({{ id }}) {{ name }}"},
    )
    assert referenced_columns("id", cfg) == ["id", "email", "name"]


# --- Sync ----------------------------------------------------------------------------------


def make_sync(**overrides: Any) -> Sync:
    fields: dict[str, Any] = {
        "id": "1",
        "slug": "users-to-crm",
        "model_id": "2",
        "destination_id": "3",
        "schedule": {"type": "manual"},
        "configuration": {"mappings": [{"from": "id", "to": "id"}]},
        "primary_key": "id",
        "referenced_columns": ["id"],
    }
    return Sync.model_validate({**fields, **overrides})


def test_sync_serializes_exactly_the_fourteen_hightouch_fields() -> None:
    assert set(make_sync().to_json_dict()) == SYNC_FIELDS


def test_sync_serializes_values_in_camel_case_json() -> None:
    body = make_sync().to_json_dict()
    assert (body["modelId"], body["destinationId"], body["workspaceId"]) == ("2", "3", "1")
    assert body["status"] == "pending"
    assert body["lastRunAt"] is None
    assert body["createdAt"].endswith(("Z", "+00:00"))
    assert body["schedule"] == {"type": "manual", "schedule": None}


def test_sync_accepts_its_camel_case_json_back() -> None:
    sync = make_sync()
    assert Sync.model_validate(sync.to_json_dict()) == sync


def test_sync_ids_are_numeric_strings() -> None:
    with pytest.raises(ValidationError):
        make_sync(id="abc")


# --- schedules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (
            {"type": "interval", "schedule": {"interval": {"quantity": 5, "unit": "minute"}}},
            IntervalSchedule,
        ),
        ({"type": "cron", "schedule": {"expression": "*/5 * * * *"}}, CronSchedule),
        (
            {
                "type": "visual",
                "schedule": {"expressions": [{"days": {"monday": True}, "time": "09:30"}]},
            },
            VisualSchedule,
        ),
        (
            {
                "type": "dbt-cloud",
                "schedule": {"account": {"id": "1"}, "job": {"id": "2"}, "dbtCredentialId": "3"},
            },
            DbtCloudSchedule,
        ),
        ({"type": "manual", "schedule": None}, ManualSchedule),
        ({"type": "continuous", "schedule": {"lingerMs": 200}}, ContinuousSchedule),
    ],
    ids=["interval", "cron", "visual", "dbt-cloud", "manual", "continuous"],
)
def test_every_design_schedule_type_validates(body: dict[str, Any], kind: type) -> None:
    schedule = SCHEDULE.validate_python(body)
    assert isinstance(schedule, kind)
    assert schedule.model_dump(mode="json", by_alias=True) == body


def test_an_interval_in_hours_counts_seconds() -> None:
    schedule = SCHEDULE.validate_python(
        {"type": "interval", "schedule": {"interval": {"quantity": 2, "unit": "hour"}}}
    )
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.schedule.interval.seconds == 7200


def test_a_continuous_schedule_lingers_200_ms_by_default() -> None:
    schedule = SCHEDULE.validate_python({"type": "continuous"})
    assert isinstance(schedule, ContinuousSchedule)
    assert schedule.schedule.linger_ms == 200


@pytest.mark.parametrize(
    "body",
    [
        {"type": "interval", "schedule": {"interval": {"quantity": 1, "unit": "year"}}},
        {"type": "interval", "schedule": {"interval": {"quantity": 0, "unit": "day"}}},
        {"type": "cron", "schedule": {"expression": "* * *"}},
        {"type": "cron", "schedule": {"expression": "61 * * * *"}},
        {
            "type": "visual",
            "schedule": {"expressions": [{"days": {"monday": True}, "time": "25:00"}]},
        },
        {
            "type": "visual",
            "schedule": {"expressions": [{"days": {"someday": True}, "time": "09:00"}]},
        },
        {"type": "visual", "schedule": {"expressions": []}},
        {"type": "dbt-cloud", "schedule": {"job": {"id": "2"}}},
        {"type": "hourly"},
    ],
    ids=[
        "unit-year",
        "quantity-0",
        "cron-3-fields",
        "cron-minute-61",
        "time-25h",
        "bad-day",
        "no-expressions",
        "dbt-no-account",
        "unknown-type",
    ],
)
def test_a_bad_schedule_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SCHEDULE.validate_python(body)


# --- SyncConfiguration ---------------------------------------------------------------------


def test_a_mapping_without_type_is_standard() -> None:
    cfg = config({"from": "a", "to": "b"})
    assert cfg.mappings[0].type == "standard"
    assert cfg.mode == "upsert"


def test_destination_specific_keys_are_kept() -> None:
    cfg = config({"from": "a", "to": "b"}, table="users")
    assert cfg.model_dump(by_alias=True)["table"] == "users"


def test_two_mappings_writing_the_same_field_are_refused() -> None:
    with pytest.raises(ValidationError, match="'email'"):
        config({"from": "a", "to": "email"}, {"type": "static", "to": "email", "value": 1})


def test_an_empty_mapping_list_is_refused() -> None:
    with pytest.raises(ValidationError):
        config()


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValidationError):
        config({"from": "a", "to": "b"}, mode="replace")


def test_a_template_with_a_syntax_error_is_refused() -> None:
    with pytest.raises(ValidationError):
        config({"type": "template", "to": "x", "template": "{% if %}"})


# --- statuses ------------------------------------------------------------------------------


def test_run_statuses_are_the_sync_statuses_without_disabled_and_pending() -> None:
    assert {s.value for s in RunStatus} == {s.value for s in SyncStatus} - {"disabled", "pending"}
    assert "disabled" not in {s.value for s in RunStatus}
    assert "pending" not in {s.value for s in RunStatus}


def test_sync_statuses_are_those_of_design() -> None:
    assert {s.value for s in SyncStatus} == {
        "disabled",
        "pending",
        "cancelled",
        "failed",
        "queued",
        "success",
        "warning",
        "querying",
        "processing",
        "reporting",
        "interrupted",
    }


# --- request bodies share the resources' constraints -----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"name": "n" * 201},
        {"slug": "Not A Slug"},
        {"primaryKey": ""},
        {"sourceId": "x1"},
        {"queryType": "q" * 51},
        {"tags": {"a": 1}},
    ],
)
def test_a_model_body_is_held_to_the_models_own_constraints(body: dict[str, Any]) -> None:
    from service.core.models import Model
    from service.core.specs import ModelCreate, ModelPatch

    full = {"name": "n", "slug": "s", "primaryKey": "id", **body}
    for kind, data in ((Model, {"id": "1", **full}), (ModelCreate, full), (ModelPatch, body)):
        with pytest.raises(ValidationError):
            kind.model_validate(data)


def test_a_patch_body_leaves_out_what_it_does_not_send() -> None:
    from service.core.specs import ModelPatch, SyncPatch

    assert ModelPatch.model_validate({}).model_dump(exclude_unset=True) == {}
    patch = SyncPatch.model_validate({"schedule": {"type": "manual"}})
    assert patch.model_dump(exclude_unset=True) == {"schedule": {"type": "manual"}}


def test_ids_are_at_most_a_signed_64_bit_integer() -> None:
    adapter = TypeAdapter(NumericId)
    assert adapter.validate_python("9223372036854775807") == "9223372036854775807"
    with pytest.raises(ValidationError):
        adapter.validate_python("9223372036854775808")
