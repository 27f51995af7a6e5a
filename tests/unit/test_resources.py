"""parse_resources: the SYNC_CONFIG_FILE, and errors naming the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from service.core.models import ContinuousSchedule
from service.resources import ResourcesError, parse_resources

DESIGN_EXAMPLE = """\
workspaceId: "1"          # optional, default "1"
models:
  - {id: "1", name: users, slug: users, primaryKey: id}
destinations:
  - id: "1"
    name: crm
    slug: crm
    type: webhook
    configuration: {url: "http://127.0.0.1:8099/hook", batchSize: 100}
syncs:
  - id: "1"
    slug: users-to-crm
    modelId: "1"
    destinationId: "1"
    schedule: {type: continuous, schedule: {lingerMs: 200}}
    configuration:
      mode: mirror
      mappings: [{from: id, to: id}, {from: email, to: email_address}]
"""


def example() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DESIGN_EXAMPLE))


def write(tmp_path: Path, data: dict[str, Any], name: str = "resources.json") -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(data))
    return path


def error_of(path: Path, *, one_line: bool = True) -> str:
    with pytest.raises(ResourcesError) as info:
        parse_resources(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    if one_line:
        assert "\n" not in message
    return message


def test_the_design_example_parses_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(DESIGN_EXAMPLE)
    resources = parse_resources(path)
    assert resources.workspace_id == "1"
    [model] = resources.models
    assert (model.id, model.slug, model.primary_key) == ("1", "users", "id")
    [destination] = resources.destinations
    assert destination.type == "webhook"
    assert destination.configuration["url"] == "http://127.0.0.1:8099/hook"
    [sync] = resources.syncs
    assert (sync.model_id, sync.destination_id) == ("1", "1")
    assert isinstance(sync.schedule, ContinuousSchedule)
    assert sync.schedule.schedule.linger_ms == 200
    assert sync.configuration["mode"] == "mirror"


def test_the_design_example_parses_the_same_from_json(tmp_path: Path) -> None:
    yaml_path = tmp_path / "resources.yaml"
    yaml_path.write_text(DESIGN_EXAMPLE)
    from_json = parse_resources(write(tmp_path, example()))
    assert from_json == parse_resources(yaml_path)


def test_the_workspace_defaults_to_1(tmp_path: Path) -> None:
    data = example()
    del data["workspaceId"]
    assert parse_resources(write(tmp_path, data)).workspace_id == "1"


def test_an_empty_file_declares_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    resources = parse_resources(path)
    assert (resources.models, resources.destinations, resources.syncs) == ([], [], [])


def test_a_webhook_without_url_names_the_configuration_field(tmp_path: Path) -> None:
    data = example()
    del data["destinations"][0]["configuration"]["url"]
    assert "destinations[0].configuration.url" in error_of(write(tmp_path, data))


def test_an_unknown_destination_type_names_the_type_field(tmp_path: Path) -> None:
    data = example()
    data["destinations"][0]["type"] = "carrier-pigeon"
    message = error_of(write(tmp_path, data))
    assert "destinations[0].type" in message
    assert "carrier-pigeon" in message


def test_an_unknown_mapping_type_names_the_mapping(tmp_path: Path) -> None:
    data = example()
    data["syncs"][0]["configuration"]["mappings"][1]["type"] = "magic"
    assert "syncs[0].configuration.mappings[1]" in error_of(write(tmp_path, data))


def test_a_duplicate_id_names_the_second_resource(tmp_path: Path) -> None:
    data = example()
    data["models"].append({"id": "1", "name": "other", "slug": "other", "primaryKey": "id"})
    message = error_of(write(tmp_path, data))
    assert "models[1].id" in message
    assert "'1'" in message


def test_a_duplicate_slug_names_the_second_resource(tmp_path: Path) -> None:
    data = example()
    data["models"].append({"id": "2", "name": "users2", "slug": "users", "primaryKey": "id"})
    assert "models[1].slug" in error_of(write(tmp_path, data))


def test_a_source_without_a_topic_names_the_topic_field(tmp_path: Path) -> None:
    data = example()
    data["sources"] = [{"id": "1", "name": "s", "slug": "s", "configuration": {}}]
    assert "sources[0].configuration.topic" in error_of(write(tmp_path, data))


def test_an_unknown_field_is_an_error_not_ignored(tmp_path: Path) -> None:
    data = example()
    data["models"][0]["primaryKye"] = "id"
    assert "models[0].primaryKye" in error_of(write(tmp_path, data))


def test_a_bad_schedule_names_the_schedule_field(tmp_path: Path) -> None:
    data = example()
    data["syncs"][0]["schedule"] = {"type": "hourly"}
    assert "syncs[0].schedule" in error_of(write(tmp_path, data))


def test_invalid_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text("models: [unclosed\n")
    message = error_of(path, one_line=False)
    assert "not valid YAML" in message
    assert "line 1" in message


def test_invalid_yaml_is_reported_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text("models: [unclosed\n")
    error_of(path)


def test_invalid_json_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "resources.json"
    path.write_text('{"models": ')
    assert "not valid" in error_of(path)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    assert "cannot read" in error_of(tmp_path / "absent.yaml")


def test_a_template_syntax_error_names_the_template_field(tmp_path: Path) -> None:
    data = example()
    data["syncs"][0]["configuration"]["mappings"].append(
        {"type": "template", "to": "x", "template": "{% if %}"}
    )
    assert "syncs[0].configuration.mappings[2].template" in error_of(write(tmp_path, data))


def test_a_source_parses_with_its_format(tmp_path: Path) -> None:
    data = example()
    data["sources"] = [
        {"id": "1", "name": "s", "slug": "s", "configuration": {"topic": "t", "format": "debezium"}}
    ]
    [source] = parse_resources(write(tmp_path, data)).sources
    assert source.configuration.format == "debezium"


def test_an_unknown_source_format_names_the_format_field(tmp_path: Path) -> None:
    data = example()
    data["sources"] = [
        {"id": "1", "name": "s", "slug": "s", "configuration": {"topic": "t", "format": "avro"}}
    ]
    assert "sources[0].configuration.format" in error_of(write(tmp_path, data))


def test_an_unusable_destination_field_stops_the_file(tmp_path: Path) -> None:
    data = example()
    data["destinations"][0]["configuration"]["headers"] = {"X-Key": "a\r\nb"}
    assert "destinations[0].configuration.headers" in error_of(write(tmp_path, data))


def test_a_configuration_nested_too_deep_stops_the_file(tmp_path: Path) -> None:
    data = example()
    deep: dict[str, Any] = {}
    for _ in range(40):
        deep = {"a": deep}
    data["syncs"][0]["configuration"]["extra"] = deep
    assert "syncs[0].configuration: nested deeper" in error_of(write(tmp_path, data))
