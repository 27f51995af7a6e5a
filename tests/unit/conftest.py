"""Fixtures of the unit tests: nothing here touches Kafka or the network."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SYNC_* variable from the caller's environment leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SYNC_"):
            monkeypatch.delenv(name)
    return monkeypatch
