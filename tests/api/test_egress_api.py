"""SSRF through the API, as a workspace token holder would try it: destinations aimed at
refused addresses are refused when created (422 naming the field) or, when created, reach
nothing through `POST /destinations/{id}/test`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api.conftest import Service
from tests.support import Listener


@pytest.fixture(params=["127.0.0.2", "::1"])
async def refused(request: pytest.FixtureRequest) -> AsyncIterator[Listener]:
    try:
        listener = await Listener(request.param).start()
    except OSError:
        pytest.skip(f"{request.param} is not available on this host")
    yield listener
    await listener.stop()


async def refused_or_unreachable(service: Service, slug: str, configuration: dict) -> None:
    """Refused at create time (422 naming the field), or created and refused by the test."""
    status, body = await service.two.call(
        "POST",
        "/destinations",
        {"name": slug, "slug": slug, "type": "webhook", "configuration": configuration},
    )
    if status == 422:
        assert "url" in str(body["details"])
        return
    assert status == 200, body
    status, check = await service.two.call("POST", f"/destinations/{body['id']}/test")
    assert status == 200
    assert check["ok"] is False
    assert "egress policy" in check["error"]


async def test_webhooks_at_refused_addresses_reach_nothing(
    service: Service, refused: Listener
) -> None:
    await refused_or_unreachable(service, "direct", {"url": f"http://{refused.netloc}/hook"})
    await refused_or_unreachable(
        service, "mapped", {"url": f"http://[::ffff:127.0.0.2]:{refused.port}/hook"}
    )
    await refused_or_unreachable(
        service, "metadata", {"url": "http://169.254.169.254/latest/meta-data/"}
    )
    assert refused.connections == 0


async def test_a_url_with_userinfo_is_refused_when_created(service: Service) -> None:
    status, body = await service.two.call(
        "POST",
        "/destinations",
        {
            "name": "trick",
            "slug": "trick",
            "type": "webhook",
            "configuration": {"url": "http://127.0.0.2:1@127.0.0.1:1/"},
        },
    )
    assert status == 422
    assert "user:password" in str(body["details"])
