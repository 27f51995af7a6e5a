"""List routes filter, order and page in the store: every order and filter the API offers,
on both stores, gives what sorting the whole list would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.api.conftest import Service
from tests.api.test_api import run_finished
from tests.support import Receiver, wait_for

pytestmark = pytest.mark.kafka


async def test_every_order_and_filter_pages_like_the_sorted_list(
    service: Service, receiver: Receiver
) -> None:
    api = service.one
    names = ["delta", "alpha", "Charlie", "bravo"]
    ids = []
    for n, name in enumerate(names):
        status, body = await api.call(
            "POST", "/models", {"name": name, "slug": f"z-{9 - n}", "primaryKey": "id"}
        )
        assert status == 200
        ids.append(body["id"])
    status, _ = await api.call("PATCH", f"/models/{ids[0]}", {"name": "echo"})
    assert status == 200
    by_name = ["Charlie", "alpha", "bravo", "echo"]  # code point order, as Python sorts

    async def names_of(**query: object) -> list[str]:
        status, page = await api.call("GET", "/models", **query)
        assert status == 200, page
        return [m["name"] for m in page["data"]]

    assert await names_of(orderBy="name") == by_name
    assert await names_of(orderBy="name", limit=2, offset=1) == by_name[1:3]
    assert await names_of(orderBy="slug") == ["bravo", "Charlie", "alpha", "echo"]
    assert await names_of(orderBy="createdAt") == ["echo", "alpha", "Charlie", "bravo"]
    assert await names_of(orderBy="updatedAt") == ["alpha", "Charlie", "bravo", "echo"]
    assert await names_of(name="alpha") == ["alpha"]
    assert await names_of(name="delta") == []

    status, dest = await api.call(
        "POST",
        "/destinations",
        {"name": "d", "slug": "d", "type": "webhook", "configuration": {"url": receiver.url}},
    )
    assert status == 200
    syncs = []
    for model_id in ids[:2]:
        status, sync = await api.call(
            "POST",
            "/syncs",
            {
                "slug": f"s-{model_id}",
                "modelId": model_id,
                "destinationId": dest["id"],
                "schedule": {"type": "manual"},
                "configuration": {"mappings": [{"from": "id", "to": "id"}]},
            },
        )
        assert status == 200
        syncs.append(sync["id"])
    _, page = await api.call("GET", "/models", orderBy="name")
    assert {m["id"]: m["syncs"] for m in page["data"]} == {
        ids[0]: [syncs[0]],
        ids[1]: [syncs[1]],
        ids[2]: [],
        ids[3]: [],
    }
    _, page = await api.call("GET", "/destinations")
    assert page["data"][0]["syncs"] == syncs

    started = datetime.now(UTC) - timedelta(seconds=1)
    _, answer = await api.call("POST", f"/syncs/{syncs[1]}/trigger", {})
    await wait_for(lambda: run_finished(service, syncs[1], answer["id"]), what="the run")

    async def sync_ids(**query: object) -> list[str]:
        status, page = await api.call("GET", "/syncs", **query)
        assert status == 200, page
        return [s["id"] for s in page["data"]]

    assert await sync_ids(orderBy="lastRunAt") == [syncs[0], syncs[1]]
    assert await sync_ids(after=started.isoformat()) == [syncs[1]]
    east = started.astimezone(timezone(timedelta(hours=2)))  # the same instant, written +02:00
    assert await sync_ids(after=east.isoformat()) == [syncs[1]]
    assert await sync_ids(before=started.isoformat()) == []
    assert await sync_ids(modelId=ids[0]) == [syncs[0]]
    assert await sync_ids(limit=1) == [syncs[0]]
    status, page = await api.call("GET", "/syncs", limit=1, offset=1)
    assert ([s["id"] for s in page["data"]], page["hasMore"]) == ([syncs[1]], False)
    assert await sync_ids() == syncs
    status, page = await service.two.call("GET", "/models", orderBy="name")
    assert page == {"data": [], "hasMore": False}
