"""load_settings: SYNC_* environment -> Settings, or one clear SettingsError line."""

from __future__ import annotations

import pytest

from service.config import SettingsError, load_settings


def test_defaults_match_the_process_interface(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.events_topics == ["model-changes"]
    assert settings.status_topic == "sync-status"
    assert settings.dlq_topic == "sync-dlq"
    assert settings.consumer_group == "sync-service"
    assert settings.database_url == "sqlite:///./sync-service.db"
    assert settings.http_port == 8080
    assert settings.config_file is None
    assert settings.api_tokens is None
    assert settings.run_page_rows == 500


def test_settings_are_read_from_sync_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    clean_env.setenv("SYNC_STATUS_TOPIC", "status")
    clean_env.setenv("SYNC_DLQ_TOPIC", "dlq")
    clean_env.setenv("SYNC_CONSUMER_GROUP", "group")
    clean_env.setenv("SYNC_DATABASE_URL", "sqlite:///tmp/x.db")
    clean_env.setenv("SYNC_HTTP_PORT", "9000")
    clean_env.setenv("SYNC_RUN_PAGE_ROWS", "250")
    settings = load_settings()
    assert settings.run_page_rows == 250
    assert settings.kafka_bootstrap_servers == "k1:9093,k2:9093"
    assert (settings.status_topic, settings.dlq_topic) == ("status", "dlq")
    assert settings.consumer_group == "group"
    assert settings.database_url == "sqlite:///tmp/x.db"
    assert settings.http_port == 9000


def test_events_topics_are_comma_separated(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_EVENTS_TOPICS", "a, b,,c ")
    assert load_settings().events_topics == ["a", "b", "c"]


def test_a_single_events_topic_is_a_list_of_one(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_EVENTS_TOPICS", "orders")
    assert load_settings().events_topics == ["orders"]


def test_no_events_topic_at_all_is_an_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_EVENTS_TOPICS", " , ")
    with pytest.raises(SettingsError, match=r"^SYNC_EVENTS_TOPICS: "):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_HTTP_PORT", "notaport"),
        ("SYNC_HTTP_PORT", "-1"),
        ("SYNC_HTTP_PORT", "70000"),
        ("SYNC_STATUS_TOPIC", ""),
        ("SYNC_LOG_LEVEL", "chatty"),
        ("SYNC_RUN_PAGE_ROWS", "0"),
        ("SYNC_RUN_PAGE_ROWS", "100001"),
    ],
)
def test_a_bad_value_names_its_setting_first(
    clean_env: pytest.MonkeyPatch, name: str, value: str
) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_a_bad_port_shows_the_value_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_HTTP_PORT", "notaport")
    with pytest.raises(SettingsError, match="notaport"):
        load_settings()


def test_a_bad_database_url_is_named_but_its_value_never_echoed(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("SYNC_DATABASE_URL", "mysql://admin:hunter2@db.internal/app")
    with pytest.raises(SettingsError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith("SYNC_DATABASE_URL: ")
    assert "hunter2" not in message
    assert "db.internal" not in message


def test_a_postgresql_database_url_is_accepted(clean_env: pytest.MonkeyPatch) -> None:
    url = "postgresql://sync:pw@127.0.0.1:5432/sync"
    clean_env.setenv("SYNC_DATABASE_URL", url)
    assert load_settings().database_url == url


def test_egress_lists_are_comma_separated_cidrs(clean_env: pytest.MonkeyPatch) -> None:
    assert load_settings().egress_allow == []
    clean_env.setenv("SYNC_EGRESS_ALLOW", "127.0.0.1/32, unix,")
    clean_env.setenv("SYNC_EGRESS_DENY", "10.0.0.0/8,fd00::/8")
    settings = load_settings()
    assert settings.egress_allow == ["127.0.0.1/32", "unix"]
    assert settings.egress_deny == ["10.0.0.0/8", "fd00::/8"]


def test_a_bad_egress_cidr_is_one_line_naming_the_setting(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_EGRESS_DENY", "10.0.0.0/8,10.0.0.0/99")
    with pytest.raises(SettingsError, match=r"^SYNC_EGRESS_DENY: .*'10.0.0.0/99' is not a CIDR"):
        load_settings()


def test_static_membership_defaults_to_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "sync-service-2")
    settings = load_settings()
    assert settings.group_instance_id == "sync-service-2"
    monkeypatch.setenv("SYNC_GROUP_INSTANCE_ID", "explicit")
    assert load_settings().group_instance_id == "explicit"
    monkeypatch.delenv("POD_NAME")
    monkeypatch.delenv("SYNC_GROUP_INSTANCE_ID")
    assert load_settings().group_instance_id is None
