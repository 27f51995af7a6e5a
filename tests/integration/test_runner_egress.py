"""The runner against destinations the egress policy refuses: nothing is delivered, nothing
is counted as delivered, and every row stays pending with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.core.models import RunStatus
from tests.integration.test_runner_webhook import Harness, user
from tests.support import Listener


@pytest.fixture
async def loopback_listener() -> AsyncIterator[Listener]:
    """A listener on 127.0.0.2, which the policy refuses."""
    listener = await Listener("127.0.0.2").start()
    yield listener
    await listener.stop()


async def test_a_307_to_a_refused_address_is_not_followed(
    harness: Harness, loopback_listener: Listener
) -> None:
    target = f"http://{loopback_listener.netloc}/hook"
    harness.receiver.default = (307, {}, {"Location": target})
    await harness.setup()
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run()
    assert run.status is RunStatus.FAILED
    assert run.successful_rows.total == 0
    assert harness.delivered("added", "delivered") == 0
    assert harness.receiver.rows == []
    assert len(harness.receiver.requests) == 1  # not retried, not split
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert [r.key for r in page] == ["1", "2"]
    assert all(r.error and "307" in r.error and target in r.error for r in page)
    assert loopback_listener.connections == 0


async def test_a_webhook_at_a_refused_address_fails_the_run_and_keeps_the_rows(
    harness: Harness, loopback_listener: Listener
) -> None:
    await harness.setup(url=f"http://127.0.0.2:{loopback_listener.port}/hook")
    await harness.send("upsert", [user(1), user(2)])
    run = await harness.run()
    assert run.status is RunStatus.FAILED
    assert harness.delivered("added", "delivered") == 0
    page = await harness.store.pending_page("7", 0, 10**9, 10)
    assert all(r.error and "egress policy" in r.error for r in page)
    assert loopback_listener.connections == 0
