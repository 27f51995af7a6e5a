"""The store's settings: leases, timeouts and retention."""

from __future__ import annotations

import pytest

from service.config import SettingsError, load_settings
from service.store.base import Retention


def test_store_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.lease_ttl_seconds, settings.lease_renew_seconds) == (15.0, 5.0)
    assert settings.store_timeout_seconds == 10.0
    assert settings.store_retention() == Retention()


def test_store_settings_are_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_LEASE_TTL_SECONDS", "30")
    clean_env.setenv("SYNC_LEASE_RENEW_SECONDS", "2")
    clean_env.setenv("SYNC_STORE_TIMEOUT_SECONDS", "3")
    clean_env.setenv("SYNC_RETENTION_RUNS_DAYS", "1")
    clean_env.setenv("SYNC_RETENTION_RUNS_PER_SYNC", "5")
    settings = load_settings()
    assert (settings.lease_ttl_seconds, settings.lease_renew_seconds) == (30.0, 2.0)
    assert settings.store_timeout_seconds == 3.0
    retention = settings.store_retention()
    assert (retention.runs_seconds, retention.runs_per_sync) == (86400.0, 5)


def test_a_renewal_slower_than_the_lease_is_refused(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SYNC_LEASE_TTL_SECONDS", "5")
    clean_env.setenv("SYNC_LEASE_RENEW_SECONDS", "5")
    with pytest.raises(SettingsError, match="SYNC_LEASE_RENEW_SECONDS must be less"):
        load_settings()
