"""The `sync-service` command: bad configuration is one line naming it, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import cli

HOURLY_SYNC = """\
models:
  - {id: "1", name: users, slug: users, primaryKey: id}
destinations:
  - {id: "1", name: crm, slug: crm, type: webhook, configuration: {url: "http://127.0.0.1:1/"}}
syncs:
  - id: "1"
    slug: users-to-crm
    modelId: "1"
    destinationId: "1"
    schedule: {type: hourly}
    configuration: {mappings: [{from: id, to: id}]}
"""


@pytest.fixture
def no_serve(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Configuration errors must stop `main` before the service (and Kafka) starts."""

    async def must_not_start(*args: object) -> int:
        raise AssertionError("serve() started despite a configuration error")

    clean_env.setattr(cli, "serve", must_not_start)
    clean_env.setattr(cli, "configure_logging", lambda level: None)
    return clean_env


def test_a_bad_setting_exits_2_with_one_line_naming_it(
    no_serve: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_serve.setenv("SYNC_HTTP_PORT", "notaport")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1
    assert "SYNC_HTTP_PORT" in err


def test_a_bad_schedule_in_the_resources_file_exits_2_naming_file_and_field(
    no_serve: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "resources.yaml"
    path.write_text(HOURLY_SYNC)
    no_serve.setenv("SYNC_CONFIG_FILE", str(path))
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(path) in err
    assert "syncs[0].schedule" in err


def test_the_resources_file_is_checked_before_serving(
    no_serve: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The stub proves the path: a valid file does reach serve()."""
    path = tmp_path / "resources.yaml"
    path.write_text(HOURLY_SYNC.replace("{type: hourly}", "{type: manual}"))
    no_serve.setenv("SYNC_CONFIG_FILE", str(path))
    with pytest.raises(AssertionError, match="serve"):
        cli.main(["serve"])


def test_an_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
