"""One contract for every store: the same tests run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from service.core.models import (
    Destination,
    Model,
    RowCounts,
    RunStatus,
    Source,
    Sync,
    SyncRun,
    SyncStatus,
)
from service.core.rows import (
    PendingRow,
    PendingWrite,
    RejectedRow,
    RowChange,
    RowFailure,
    RowOutcomes,
    SnapshotProgress,
)
from service.store.base import Conflict, RunQuery, Store
from tests.contract.conftest import POSTGRES_URL, StoreFactory, make_store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def source(item_id: str = "1", slug: str = "events", ws: str = "1") -> Source:
    return Source(id=item_id, name=slug, slug=slug, workspace_id=ws, configuration={"topic": "t"})


def model(
    item_id: str = "1", slug: str = "users", ws: str = "1", source_id: str | None = None
) -> Model:
    return Model(
        id=item_id, name=slug, slug=slug, workspace_id=ws, primary_key="id", source_id=source_id
    )


def destination(item_id: str = "1", slug: str = "crm", ws: str = "1") -> Destination:
    return Destination(
        id=item_id,
        name=slug,
        slug=slug,
        workspace_id=ws,
        type="webhook",
        configuration={"url": "http://127.0.0.1:9/hook"},
    )


def sync(
    item_id: str = "1",
    slug: str = "users-to-crm",
    ws: str = "1",
    model_id: str = "1",
    destination_id: str = "1",
    **extra: Any,
) -> Sync:
    return Sync.model_validate(
        {
            "id": item_id,
            "slug": slug,
            "workspaceId": ws,
            "modelId": model_id,
            "destinationId": destination_id,
            "schedule": {"type": "manual"},
            "configuration": {"mode": "mirror", "mappings": [{"from": "id", "to": "id"}]},
            "primaryKey": "id",
            "referencedColumns": ["id"],
            **extra,
        }
    )


async def catalog(store: Store, ws: str = "1") -> Sync:
    """A model, a destination and a sync between them; returns the sync."""
    await store.upsert(model(ws=ws))
    await store.upsert(destination(ws=ws))
    s = sync(ws=ws)
    await store.upsert(s)
    return s


def pending(key: str, data: dict[str, Any] | None = None, sync_id: str = "1") -> PendingWrite:
    body = orjson.dumps(data if data is not None else {"id": key})
    return PendingWrite(
        sync_id=sync_id,
        key=key,
        op="upsert",
        data=body,
        row_hash=b"h-" + body,
        emitted_at=1_700_000_000.5,
    )


def run(run_id: int, minutes: int, sync_id: str = "1", **extra: Any) -> SyncRun:
    return SyncRun(
        id=str(run_id), sync_id=sync_id, created_at=T0 + timedelta(minutes=minutes), **extra
    )


# --- lifecycle -------------------------------------------------------------------------------


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_ping_is_false_once_closed(open_store: StoreFactory) -> None:
    store = await open_store()
    await store.close()
    assert await store.ping() is False


async def test_migrations_are_idempotent(store: Store, open_store: StoreFactory) -> None:
    await store.upsert(model())
    version = await store.catalog_version()
    again = await open_store()  # applies nothing: every version is recorded
    assert await again.get(Model, "1") == await store.get(Model, "1")
    assert await again.catalog_version() == version
    await again.close()
    third = await open_store()
    assert [m.id for m in await third.list(Model)] == ["1"]


async def test_rows_stored_by_schema_version_6_carry_over(open_store: StoreFactory) -> None:
    """Version 7 merges pending_rows and synced_rows into row_state, keeping every row."""
    old = await open_store(schema_upto=6)
    synced = "INSERT INTO synced_rows (sync_id, key, row_hash, data, source) VALUES (?, ?, ?, ?, ?)"
    waiting = (
        "INSERT INTO pending_rows (sync_id, key, seq, op, data, row_hash) VALUES (?, ?, ?, ?, ?, ?)"
    )
    statements = [
        (synced, ("1", "held", b"h1", b'{"sent": 1}', b'{"id": "held"}')),
        (synced, ("1", "both", b"h2", b'{"sent": 2}', b'{"id": "both"}')),
        (waiting, ("1", "both", 5, "upsert", b'{"id": "both", "v": 2}', b"h3")),
        (waiting, ("1", "gone", 6, "delete", None, None)),
    ]
    async with old._d.tx() as conn:  # type: ignore[attr-defined]
        for sql, params in statements:
            await conn.execute(sql, *params)
    await old.close()

    store = await open_store()
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert {k: (r.op, r.seq, r.synced_hash) for k, r in page.items()} == {
        "both": ("upsert", 5, b"h2"),
        "gone": ("delete", 6, None),
    }
    assert page["both"].data == {"id": "both", "v": 2}
    held = await store.synced_rows("1", ["held", "both", "gone"])
    assert {k: r.row_hash for k, r in held.items()} == {"held": b"h1", "both": b"h2"}
    assert orjson.loads(held["held"].source or b"") == {"id": "held"}
    assert await store.pending_counts() == {"1": 2}


async def test_replicas_opening_together_migrate_once(open_store: StoreFactory) -> None:
    stores = await asyncio.gather(*(open_store() for _ in range(3)))
    await stores[0].upsert(model())
    for s in stores:
        assert [m.slug for m in await s.list(Model)] == ["users"]


# --- catalog ---------------------------------------------------------------------------------


async def test_upsert_then_get_and_list_by_workspace(store: Store) -> None:
    src, dst, s = source(), destination(), sync()
    await store.upsert(src)
    await store.upsert(model(source_id="1"))
    await store.upsert(model("2", "orders"))
    await store.upsert(dst)
    await store.upsert(s)

    got = await store.get(Model, "1", "1")
    assert got is not None
    assert got.slug == "users"
    assert got.source_id == "1"
    assert await store.get(Model, "1") == got  # no workspace: any
    assert [m.id for m in await store.list(Model, "1")] == ["1", "2"]
    assert [m.id for m in await store.list(Model)] == ["1", "2"]
    assert await store.get(Source, "1", "1") == src
    assert await store.get(Destination, "1", "1") == dst
    assert await store.get(Sync, "1", "1") == s  # every field, status pending

    for kind in (Source, Model, Destination, Sync):
        assert await store.get(kind, "1", "2") is None  # another workspace sees nothing
        assert await store.list(kind, "2") == []
    assert await store.get(Model, "99") is None

    await store.upsert(model("1", "people"))  # replace by id
    replaced = await store.get_model("1")
    assert replaced is not None
    assert replaced.slug == "people"
    assert replaced.source_id is None
    assert len(await store.list_models()) == 2


async def test_list_orders_by_numeric_id(store: Store) -> None:
    for item_id in ("10", "9", "100", "1"):
        await store.upsert(model(item_id, f"m{item_id}"))
    assert [m.id for m in await store.list(Model)] == ["1", "9", "10", "100"]


async def test_create_assigns_increasing_numeric_ids(store: Store) -> None:
    first = await store.create(model("77", "a"))  # the item's own id is ignored
    second = await store.create(model("77", "b"))
    assert (first.id, second.id) == ("1", "2")
    assert (await store.get(Model, "2")) == second
    await store.upsert(model("10", "c"))
    assert (await store.create(model("1", "d"))).id == "11"
    assert (await store.create(destination("5", "crm"))).id == "1"  # per kind
    await store.upsert(model("1", "a"))


async def test_create_never_hands_out_an_id_twice(open_store: StoreFactory) -> None:
    replicas = [await open_store() for _ in range(2)]
    created = await asyncio.gather(
        *(replicas[i % 2].create(model("1", f"m{i}")) for i in range(20))
    )
    ids = sorted(int(m.id) for m in created)
    assert ids == list(range(1, 21))
    assert len(await replicas[0].list(Model)) == 20


async def test_duplicate_slug_conflicts_within_a_workspace_only(store: Store) -> None:
    await store.upsert(model("1", "users"))
    version = await store.catalog_version()
    with pytest.raises(Conflict) as upserted:
        await store.upsert(model("2", "users"))
    assert upserted.value.field == "slug"
    with pytest.raises(Conflict) as created:
        await store.create(model("1", "users"))
    assert created.value.field == "slug"
    await store.upsert(model("2", "orders"))
    with pytest.raises(Conflict):
        await store.upsert(model("2", "users"))  # renaming onto a used slug
    assert await store.catalog_version() == version + 1  # failed writes changed nothing
    assert [m.slug for m in await store.list(Model)] == ["users", "orders"]

    await store.upsert(model("3", "users", ws="2"))  # another workspace may use it
    other = await store.create(model("9", "users", ws="3"))
    assert other.id == "4"
    await store.upsert(model("1", "users"))  # the same item keeps its own slug
    await store.upsert(destination("1", "users"))  # another kind may use it
    await store.upsert(source("1", "users"))


async def test_delete(store: Store) -> None:
    await store.upsert(model())
    assert await store.delete(Model, "1", "2") is False  # another workspace's
    assert await store.get(Model, "1") is not None
    assert await store.delete(Model, "1", "1") is True
    assert await store.get(Model, "1") is None
    assert await store.delete(Model, "1", "1") is False
    assert await store.list(Model) == []


async def test_delete_conflicts_while_referred_to(store: Store) -> None:
    await store.upsert(source())
    await store.upsert(model(source_id="1"))
    await store.upsert(destination())
    await store.upsert(sync())

    with pytest.raises(Conflict) as by_sync:
        await store.delete(Model, "1", "1")
    assert by_sync.value.field == "modelId"
    with pytest.raises(Conflict) as by_sync_destination:
        await store.delete(Destination, "1", "1")
    assert by_sync_destination.value.field == "destinationId"
    with pytest.raises(Conflict) as by_model:
        await store.delete(Source, "1", "1")
    assert by_model.value.field == "sourceId"
    assert await store.delete(Model, "1", "2") is False  # not there to conflict

    assert await store.delete(Sync, "1", "1") is True
    assert await store.delete(Destination, "1", "1") is True
    assert await store.delete(Model, "1", "1") is True
    assert await store.delete(Source, "1", "1") is True


async def test_deleting_a_sync_drops_its_rows_and_runs(store: Store) -> None:
    await catalog(store)
    await store.upsert(sync("2", "other"))
    for sync_id in ("1", "2"):
        await store.write_pending([pending("a", sync_id=sync_id), pending("b", sync_id=sync_id)])
        rows = await store.pending_page(sync_id, 0, 10**9, 10)
        await store.record_outcomes(sync_id, RowOutcomes(delivered=[delivered(rows[0])]), 1.0)
        await store.save_run(run(int(sync_id), 0, sync_id=sync_id))

    assert await store.delete(Sync, "1", "1") is True
    assert await store.pending_counts() == {"2": 1}
    assert await store.max_pending_seq("1") == 0
    assert await store.synced_rows("1", ["a", "b"]) == {}
    assert await store.list_runs(RunQuery("1")) == ([], False)
    assert list(await store.synced_rows("2", ["a", "b"])) == ["a"]
    assert len((await store.list_runs(RunQuery("2")))[0]) == 1


async def test_sync_status_survives_upsert(store: Store) -> None:
    s = await catalog(store)
    await store.set_sync_status("1", SyncStatus.SUCCESS)
    await store.upsert(s.model_copy(update={"status": SyncStatus.FAILED}))  # the runs' to write
    got = await store.get_sync("1")
    assert got is not None
    assert got.status == SyncStatus.SUCCESS

    await store.upsert(s.model_copy(update={"disabled": True}))
    got = await store.get_sync("1")
    assert got is not None
    assert got.status == SyncStatus.DISABLED
    assert got.disabled is True

    await store.upsert(s.model_copy(update={"disabled": False}))
    got = await store.get_sync("1")
    assert got is not None
    assert got.status == SyncStatus.PENDING

    created = await store.create(sync("1", "created", disabled=True))
    got = await store.get_sync(created.id)
    assert got is not None
    assert got.status == SyncStatus.DISABLED


async def test_set_sync_status_with_last_run_at(store: Store) -> None:
    await catalog(store)
    version = await store.catalog_version()
    await store.set_sync_status("1", SyncStatus.PROCESSING)
    got = await store.get_sync("1")
    assert got is not None
    assert (got.status, got.last_run_at) == (SyncStatus.PROCESSING, None)

    when = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    await store.set_sync_status("1", SyncStatus.WARNING, last_run_at=when)
    await store.set_sync_status("1", SyncStatus.QUEUED)  # keeps lastRunAt
    got = await store.get_sync("1")
    assert got is not None
    assert got.status == SyncStatus.QUEUED
    assert got.last_run_at == when
    listed = await store.list_syncs()
    assert listed[0].last_run_at == when
    assert await store.catalog_version() == version  # status is not a catalog change
    await store.set_sync_status("404", SyncStatus.FAILED)  # no such sync: nothing happens


async def test_catalog_version_grows_on_every_write(store: Store) -> None:
    seen = [await store.catalog_version()]

    async def grew() -> None:
        version = await store.catalog_version()
        assert version > seen[-1]
        seen.append(version)

    await store.upsert(source())
    await grew()
    await store.upsert(model())
    await grew()
    await store.upsert(model())  # the same again still counts
    await grew()
    await store.create(destination())
    await grew()
    await store.upsert(sync())
    await grew()
    await store.delete(Sync, "1", "1")
    await grew()
    assert await store.delete(Sync, "1", "1") is False
    assert await store.catalog_version() == seen[-1]


# --- rows ------------------------------------------------------------------------------------


async def test_write_pending_keeps_the_newest_version_per_key(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending("a", {"id": "a", "v": 1}), pending("b")])
    first = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert first["a"].seq < first["b"].seq  # in the order written

    # Fail "a" once, then a new version arrives: it replaces the row and starts afresh.
    failure = RowFailure("a", first["a"].seq, "added", "boom")
    await store.record_outcomes("1", RowOutcomes(failed=[failure]), 5.0)
    await store.write_pending(
        [pending("a", {"id": "a", "v": 2}), pending("c"), pending("a", {"id": "a", "v": 3})]
    )
    rows = await store.pending_page("1", 0, 10**9, 10)
    assert [r.key for r in rows] == ["b", "c", "a"]
    newest = rows[-1]
    assert newest.data == {"id": "a", "v": 3}
    assert newest.row_hash == b"h-" + orjson.dumps(newest.data)
    assert newest.op == "upsert"
    assert newest.emitted_at == 1_700_000_000.5
    assert (newest.attempts, newest.error) == (0, None)
    assert newest.seq > max(r.seq for r in first.values())
    assert rows[1].seq > first["b"].seq

    await store.write_pending(
        [PendingWrite("1", "b", "delete", None, None, None), pending("x", sync_id="2")]
    )
    b = next(r for r in await store.pending_page("1", 0, 10**9, 10) if r.key == "b")
    assert (b.op, b.data, b.row_hash, b.emitted_at) == ("delete", None, None, None)
    assert b.seq > newest.seq
    assert await store.pending_counts() == {"1": 3, "2": 1}
    await store.write_pending([])


async def test_rows_the_destination_holds_are_not_kept(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending("same"), pending("old"), pending("gone")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    assert (
        await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
        is None
    )

    kept = await store.write_pending(
        [
            pending("same"),  # the version synced: nothing to do
            pending("old", {"id": "old", "v": 2}),  # changed
            PendingWrite("1", "never", "delete", None, None, None),  # nothing to remove
            PendingWrite("1", "gone", "delete", None, None, None),  # synced: remove it
            pending("new"),
        ]
    )
    assert kept == 3
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert {k: r.op for k, r in page.items()} == {
        "old": "upsert",
        "gone": "delete",
        "new": "upsert",
    }

    # What the destination holds comes with each row of a run's page.
    synced = {r.key: r for r in rows}
    assert page["old"].synced_hash == synced["old"].row_hash != page["old"].row_hash
    assert page["new"].synced_hash is None
    assert (page["gone"].synced_hash, page["gone"].synced_source) == (
        synced["gone"].row_hash,
        synced["gone"].data,
    )
    assert page["old"].synced_source is None  # only removals need it

    # With a newer version pending, the synced version is kept: it must replace that one.
    assert await store.write_pending([pending("old")]) == 1
    back = next(r for r in await store.pending_page("1", 0, 10**9, 10) if r.key == "old")
    assert back.row_hash == back.synced_hash
    assert await store.write_pending([pending("same", sync_id="2")]) == 1  # another sync


async def test_pending_page_bounds_and_order(store: Store) -> None:
    await store.write_pending([pending(f"k{i}") for i in range(10)])
    seqs = [r.seq for r in await store.pending_page("1", 0, 10**9, 100)]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 10

    page = await store.pending_page("1", seqs[2], seqs[7], 100)  # after < seq <= upto
    assert [r.key for r in page] == [f"k{i}" for i in range(3, 8)]
    page = await store.pending_page("1", seqs[2], seqs[7], 2)
    assert [r.seq for r in page] == seqs[3:5]
    assert await store.pending_page("1", seqs[-1], 10**9, 10) == []
    assert await store.pending_page("1", seqs[5], seqs[5], 10) == []
    assert await store.pending_page("2", 0, 10**9, 10) == []


async def test_pending_page_stops_after_the_row_that_fills_its_bytes(store: Store) -> None:
    """Wide rows make short pages, and a row over the bound alone still makes one."""
    wide = {f"w{i}": pending(f"w{i}", {"id": f"w{i}", "pad": "x" * 990}) for i in range(6)}
    size = len(wide["w0"].data or b"")
    await store.write_pending(list(wide.values()))
    everything = await store.pending_page("1", 0, 10**9, 100)
    assert [r.key for r in everything] == list(wide)

    def keys(rows: list[PendingRow]) -> list[str]:
        return [r.key for r in rows]

    # The rows before the last one hold less than the bound; the last one crosses it.
    assert keys(await store.pending_page("1", 0, 10**9, 100, max_bytes=2 * size)) == [
        "w0",
        "w1",
    ]
    assert keys(await store.pending_page("1", 0, 10**9, 100, max_bytes=2 * size + 1)) == [
        "w0",
        "w1",
        "w2",
    ]
    assert keys(await store.pending_page("1", 0, 10**9, 100, max_bytes=1)) == ["w0"]
    assert keys(await store.pending_page("1", 0, 10**9, 2, max_bytes=10**9)) == ["w0", "w1"]
    upto = everything[3].seq
    assert keys(await store.pending_page("1", 0, upto, 100, max_bytes=10**9)) == list(wide)[:4]
    # Paging on by the last seq reads every row once.
    seen: list[str] = []
    cursor = 0
    while page := await store.pending_page("1", cursor, 10**9, 100, max_bytes=size):
        seen += keys(page)
        cursor = page[-1].seq
    assert seen == list(wide)


async def test_max_pending_seq(store: Store) -> None:
    assert await store.max_pending_seq("1") == 0
    await store.write_pending([pending("a"), pending("b"), pending("z", sync_id="2")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    assert await store.max_pending_seq("1") == rows[-1].seq
    assert await store.max_pending_seq("2") > rows[-1].seq
    await store.record_outcomes("1", RowOutcomes(dropped=[(r.key, r.seq) for r in rows]), 1.0)
    assert await store.max_pending_seq("1") == 0
    assert await store.pending_counts() == {"2": 1}


async def test_synced_rows_for_many_keys(store: Store) -> None:
    keys = [f"key-{i}" for i in range(1234)]
    await store.write_pending([pending(k) for k in keys])
    rows = await store.pending_page("1", 0, 10**9, 2000)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)

    asked = [*keys[::-1], "missing"]
    found = await store.synced_rows("1", asked)
    assert set(found) == set(keys)
    row = found["key-700"]
    assert row.key == "key-700"
    assert orjson.loads(row.source or b"") == {"id": "key-700"}
    assert row.row_hash == b"h-" + orjson.dumps({"id": "key-700"})
    assert await store.synced_rows("1", []) == {}
    assert await store.synced_rows("2", keys) == {}


def delivered(row: Any, op: str = "added") -> RowChange:
    """The change the runner would have sent for a pending row."""
    return RowChange(
        op=op,  # type: ignore[arg-type]
        key=row.key,
        data=row.data or {},
        seq=row.seq,
        row_hash=None if op == "removed" else row.row_hash,
    )


async def test_record_outcomes(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("sent", "gone", "newer", "bad", "skip")])
    rows = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    # "gone" was synced before; "newer" gets a new version while its old one is in flight.
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(rows["gone"])]), 1.0)
    await store.write_pending([pending("gone", {"id": "gone", "v": 2})])
    gone = (await store.pending_page("1", rows["skip"].seq, 10**9, 10))[0]
    await store.write_pending([pending("newer", {"id": "newer", "v": 2})])

    outcomes = RowOutcomes(
        delivered=[
            delivered(rows["sent"]),
            delivered(gone, "removed"),
            delivered(rows["newer"]),
        ],
        failed=[RowFailure("bad", rows["bad"].seq, "added", "HTTP 400")],
        dropped=[("skip", rows["skip"].seq)],
    )
    await store.record_outcomes("1", outcomes, 123.5)

    synced = await store.synced_rows("1", ["sent", "gone", "newer", "bad", "skip"])
    assert set(synced) == {"sent", "newer"}  # removed rows are forgotten
    assert orjson.loads(synced["sent"].source or b"") == {"id": "sent"}
    left = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert set(left) == {"newer", "bad"}  # "newer" stays: its seq moved on
    assert left["newer"].data == {"id": "newer", "v": 2}
    assert (left["bad"].attempts, left["bad"].error) == (1, "HTTP 400")

    again = RowFailure("bad", rows["bad"].seq, "added", "HTTP 500")
    stale = RowFailure("newer", rows["newer"].seq, "added", "old version")
    await store.record_outcomes("1", RowOutcomes(failed=[again, stale]), 124.0)
    left = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert (left["bad"].attempts, left["bad"].error) == (2, "HTTP 500")
    assert (left["newer"].attempts, left["newer"].error) == (0, None)

    # A changed row overwrites what was synced.
    await store.record_outcomes(
        "1", RowOutcomes(delivered=[delivered(left["newer"], "changed")]), 125.0
    )
    newer = (await store.synced_rows("1", ["newer"]))["newer"]
    assert orjson.loads(newer.source or b"") == {"id": "newer", "v": 2}
    assert await store.pending_counts() == {"1": 1}
    await store.record_outcomes("1", RowOutcomes(), 126.0)


async def test_failed_rows_are_listed_and_counted(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("a", "b", "c")])
    rows = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    failed = [RowFailure(k, rows[k].seq, "added", f"HTTP 400 for {k}") for k in ("c", "a")]
    await store.record_outcomes("1", RowOutcomes(failed=failed), 1_700_000_100.0)
    assert await store.failed_counts() == {"1": 2}

    page, more = await store.list_pending("1", failed_only=True, limit=1, offset=0)
    assert [(r.key, r.error, r.attempts) for r in page] == [("a", "HTTP 400 for a", 1)]
    assert page[0].last_attempt_at == 1_700_000_100.0
    assert more is True
    page, more = await store.list_pending("1", failed_only=True, limit=5, offset=1)
    assert [r.key for r in page] == ["c"]
    assert more is False
    page, _ = await store.list_pending("1", failed_only=False, limit=5, offset=0)
    assert [(r.key, r.error) for r in page] == [
        ("a", "HTTP 400 for a"),
        ("b", None),
        ("c", "HTTP 400 for c"),
    ]
    # A newer version of a failed row starts clean.
    await store.write_pending([pending("a", {"id": "a", "v": 2})])
    assert await store.failed_counts() == {"1": 1}


async def test_requeue_synced_makes_every_synced_row_pending_again(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("x", "y", "z")])
    rows = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    sent = [delivered(rows[key]) for key in ("x", "y", "z")]
    await store.record_outcomes("1", RowOutcomes(delivered=sent), 1.0)
    assert await store.pending_counts() == {}
    # "y" has a newer pending version: the resync must not replace it with the old one.
    await store.write_pending([pending("y", {"id": "y", "v": 2})])
    before = await store.max_pending_seq("1")

    assert await store.requeue_synced("1") == 2
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert set(page) == {"x", "y", "z"}
    assert page["y"].data == {"id": "y", "v": 2}
    assert page["x"].data == {"id": "x"}
    assert page["x"].op == "upsert"
    assert page["x"].seq > before and page["z"].seq > before
    assert await store.requeue_synced("1") == 0  # all pending already


async def test_closing_a_snapshot_plans_absent_keys_as_removed(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("a", "b", "c")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
    await store.write_pending([pending("d")])  # pending, never synced, absent too
    before = await store.max_pending_seq("1")

    # A snapshot in two parts holds a (unchanged) and c (changed): b and d are gone.
    await store.write_pending([pending("a")], SnapshotProgress(keys=[("1", "s1", "a")]))
    assert [s[:2] for s in await store.open_snapshots()] == [("1", "s1")]
    await store.write_pending(
        [pending("c", {"id": "c", "v": 2})],
        SnapshotProgress(keys=[("1", "s1", "c")], closed=[("1", "s1")]),
    )
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert {k: r.op for k, r in page.items()} == {"b": "delete", "c": "upsert", "d": "delete"}
    assert page["b"].seq > page["c"].seq > before
    assert page["d"].seq > page["c"].seq
    assert await store.open_snapshots() == []


async def test_a_closing_message_read_again_does_not_reopen_its_snapshot(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("a", "b")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
    await store.write_pending([pending("a")], SnapshotProgress(keys=[("1", "s1", "a")]))
    last = SnapshotProgress(keys=[("1", "s1", "b")], closed=[("1", "s1")])
    await store.write_pending([pending("b")], last)
    assert await store.pending_page("1", 0, 10**9, 10) == []  # both unchanged, none absent
    # After a crash the last message comes again: it must not count as a snapshot of "b" only.
    again = SnapshotProgress(keys=[("1", "s1", "b")], closed=[("1", "s1")])
    await store.write_pending([pending("b")], again)
    assert await store.pending_page("1", 0, 10**9, 10) == []
    assert await store.open_snapshots() == []


async def test_an_unclosed_snapshot_removes_nothing(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending("a"), pending("b")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
    await store.write_pending([], SnapshotProgress(keys=[("1", "s2", "a")]))
    assert await store.pending_counts() == {}
    ((sync_id, snapshot_id, opened_at),) = await store.open_snapshots()
    assert (sync_id, snapshot_id) == ("1", "s2")
    assert opened_at > 1_700_000_000


async def test_a_truncated_table_plans_every_held_key_as_removed(store: Store) -> None:
    await catalog(store)
    await store.write_pending([pending(k) for k in ("a", "b")])
    rows = await store.pending_page("1", 0, 10**9, 10)
    await store.record_outcomes("1", RowOutcomes(delivered=[delivered(r) for r in rows]), 1.0)
    before = await store.max_pending_seq("1")

    # "c" arrives in the same transaction as the truncate, before it: it goes too.
    await store.write_pending([pending("c")], SnapshotProgress(truncated=["1"]))
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert {k: r.op for k, r in page.items()} == {"a": "delete", "b": "delete", "c": "delete"}
    assert min(r.seq for r in page.values()) > before
    assert await store.open_snapshots() == []
    # Nothing held any more: a second truncate plans nothing new.
    seqs = {k: r.seq for k, r in page.items()}
    await store.write_pending([], SnapshotProgress(truncated=["1"]))
    page = {r.key: r for r in await store.pending_page("1", 0, 10**9, 10)}
    assert {k: r.seq for k, r in page.items()} == seqs


async def test_rejected_rows_are_kept_claimed_once_and_listed(store: Store) -> None:
    await catalog(store)
    refused = [RejectedRow("1", "no value for the primary key 'id'", b'{"name": "x"}')] * 3
    await store.write_pending([], SnapshotProgress(rejected=refused))
    page, more = await store.list_rejected("1", limit=2, offset=0)
    assert len(page) == 2
    assert more is True
    assert page[0].reason == "no value for the primary key 'id'"
    assert orjson.loads(page[0].data) == {"name": "x"}
    assert page[0].run_id is None
    assert await store.claim_rejected("1", "41") == 3
    assert await store.claim_rejected("1", "42") == 0  # counted by one run only
    page, _ = await store.list_rejected("1", limit=5, offset=0)
    assert {r.run_id for r in page} == {"41"}


async def test_a_sync_lease_has_one_holder_until_released_or_expired(store: Store) -> None:
    await catalog(store)
    assert await store.acquire_lease("1", "replica-a", 60)
    assert await store.acquire_lease("1", "replica-a", 60)  # renewing one's own
    assert not await store.acquire_lease("1", "replica-b", 60)
    assert await store.acquire_lease("2", "replica-b", 60)  # another sync is free
    await store.release_lease("1", "replica-b")  # not b's to release
    assert not await store.acquire_lease("1", "replica-b", 60)
    await store.release_lease("1", "replica-a")
    assert await store.acquire_lease("1", "replica-b", -1)  # held, but already expired
    assert await store.acquire_lease("1", "replica-a", 60)


# --- runs ------------------------------------------------------------------------------------


async def test_next_run_id_increases(store: Store, open_store: StoreFactory) -> None:
    other = await open_store()
    ids = [int(await (store if i % 2 else other).next_run_id()) for i in range(6)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 6
    together = await asyncio.gather(*(store.next_run_id() for _ in range(10)))
    assert len(set(together)) == 10
    assert min(int(i) for i in together) > ids[-1]


async def test_save_run_inserts_then_replaces(store: Store) -> None:
    first = run(7, 0, status=RunStatus.QUEUED)
    await store.save_run(first)
    assert await store.list_runs(RunQuery("1")) == ([first], False)

    done = first.model_copy(
        update={
            "status": RunStatus.SUCCESS,
            "started_at": T0 + timedelta(seconds=1),
            "finished_at": T0 + timedelta(seconds=3),
            "planned_rows": RowCounts(added_count=2),
            "successful_rows": RowCounts(added_count=2),
            "completion_ratio": 1.0,
        }
    )
    await store.save_run(done)
    runs, more = await store.list_runs(RunQuery("1"))
    assert (runs, more) == ([done], False)
    assert runs[0].finished_at == T0 + timedelta(seconds=3)


async def test_list_runs(store: Store) -> None:
    # Ids do not follow creation: run 5 is the oldest. Run 3 never started.
    created = {5: 0, 1: 10, 4: 20, 3: 30, 2: 40}
    for run_id, minutes in created.items():
        started = None if run_id == 3 else T0 + timedelta(minutes=minutes, seconds=90 - run_id)
        await store.save_run(run(run_id, minutes, started_at=started))
    await store.save_run(run(9, 15, sync_id="2"))

    async def ids(**query: Any) -> tuple[list[str], bool]:
        runs, more = await store.list_runs(RunQuery("1", **query))
        return [r.id for r in runs], more

    assert await ids() == (["2", "3", "4", "1", "5"], False)  # newest first, default 5
    assert await ids(limit=2) == (["2", "3"], True)
    assert await ids(limit=2, offset=2) == (["4", "1"], True)
    assert await ids(limit=2, offset=4) == (["5"], False)
    assert await ids(limit=2, offset=9) == ([], False)
    assert await ids(ascending=True) == (["5", "1", "4", "3", "2"], False)
    assert await ids(order_by="id") == (["5", "4", "3", "2", "1"], False)
    assert await ids(order_by="id", ascending=True, limit=3) == (["1", "2", "3"], True)
    assert await ids(order_by="startedAt") == (["2", "4", "1", "5", "3"], False)  # nulls last
    assert await ids(order_by="startedAt", ascending=True) == (["5", "1", "4", "2", "3"], False)
    assert await ids(order_by="finishedAt") == (["5", "4", "3", "2", "1"], False)  # all null
    assert await ids(order_by="nonsense") == (["2", "3", "4", "1", "5"], False)
    assert await ids(run_id="4") == (["4"], False)
    assert await ids(run_id="9") == ([], False)  # another sync's run
    after = T0 + timedelta(minutes=10)
    before = T0 + timedelta(minutes=40)
    assert await ids(after=after) == (["2", "3", "4"], False)  # strictly after
    assert await ids(before=before) == (["3", "4", "1", "5"], False)  # strictly before
    assert await ids(after=after, before=before, ascending=True) == (["4", "3"], False)
    assert await store.list_runs(RunQuery("404")) == ([], False)
    runs, _ = await store.list_runs(RunQuery("2"))
    assert runs == [run(9, 15, sync_id="2")]


# --- PostgreSQL only ---------------------------------------------------------------------------


def test_postgres_placeholders() -> None:
    from service.store.postgres import pg

    assert pg("SELECT ? FROM t WHERE a = ? AND b IN (?, ?)") == (
        "SELECT $1 FROM t WHERE a = $2 AND b IN ($3, $4)"
    )
    assert pg("SELECT 1") == "SELECT 1"


def test_postgres_url_is_masked() -> None:
    from service.store.pgconnect import mask_url
    from service.store.postgres import PostgresStore

    assert (
        mask_url("postgresql://sync:s3cr%40t@db:5432/sync") == "postgresql://sync:***@db:5432/sync"
    )
    assert mask_url("postgres://u:p@h/d?sslmode=require&password=x") == (
        "postgres://u:***@h/d?sslmode=require&password=***"
    )
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"
    assert mask_url("postgresql://h:5432/d") == "postgresql://h:5432/d"
    assert "pw" not in repr(PostgresStore("postgresql://u:pw@h/d"))
    with pytest.raises(ValueError, match="postgresql://") as bad:
        PostgresStore("mysql://u:topsecret@h/d")
    assert "topsecret" not in str(bad.value)


async def test_postgres_pending_seq_grows_across_replicas(postgres_url: str) -> None:
    one, two = make_store(postgres_url), make_store(postgres_url)
    await asyncio.gather(one.open(), two.open())
    try:
        await one.write_pending([pending("a")])
        await two.write_pending([pending("b")])
        await one.write_pending([pending("c")])
        await asyncio.gather(
            *(
                s.write_pending([pending(f"k{i % 7}", {"id": i})])
                for i, s in enumerate([one, two] * 20)
            )
        )
        rows = await two.pending_page("1", 0, 10**9, 100)
        assert [r.key for r in rows[:3]] == ["a", "b", "c"]
        assert [r.seq for r in rows] == sorted({r.seq for r in rows})
        assert len(rows) == 10
    finally:
        await one.close()
        await two.close()


async def _with_store_open(postgres_url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows `sql` gives on another connection while a store on `postgres_url` is open."""
    import asyncpg

    store = make_store(postgres_url)
    await store.open()
    admin = await asyncpg.connect(postgres_url)
    try:
        return [tuple(r) for r in await admin.fetch(sql)]
    finally:
        await admin.close()
        await store.close()


async def test_postgres_sessions_are_named(postgres_url: str) -> None:
    """pg_stat_activity tells the store's sessions from the destinations' on a shared server."""
    found = await _with_store_open(
        postgres_url,
        "SELECT application_name FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
        "AND datname = current_database()",
    )
    assert ("sync-service store",) in found


async def test_postgres_row_keys_compare_byte_by_byte(postgres_url: str) -> None:
    """row_state's sync id and key use the "C" collation whatever the database's locale: the
    key index compares bytes, as SQLite does."""
    found = await _with_store_open(
        postgres_url,
        "SELECT column_name, collation_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'row_state' "
        "AND column_name IN ('sync_id', 'key') ORDER BY column_name",
    )
    assert found == [("key", "C"), ("sync_id", "C")]


async def test_postgres_password_never_in_errors_or_logs(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from urllib.parse import urlsplit

    from service.store.postgres import PostgresStore

    parts = urlsplit(POSTGRES_URL)
    host = f"{parts.hostname}:{parts.port or 5432}"
    caplog.set_level(logging.DEBUG)
    for url in (
        f"postgresql://{parts.username}:wrong-Secret-1@{host}{parts.path}",  # bad password
        "postgresql://sync:Secret-2@127.0.0.1:9/sync",  # nobody listening
    ):
        store = make_store(url)
        assert isinstance(store, PostgresStore)
        with pytest.raises(ConnectionError) as failed:
            await store.open()
        chain: list[str] = []
        exc: BaseException | None = failed.value
        while exc is not None:
            chain.append(repr(exc))
            exc = exc.__cause__ or exc.__context__
        assert "***" in str(failed.value)
        assert "Secret" not in " ".join(chain)
    good = make_store(postgres_url)
    await good.open()
    await good.close()
    password = parts.password or "\0"
    assert f"{parts.username}:***@" in caplog.text  # the store logs where it is, masked
    assert "Secret" not in caplog.text
    assert f":{password}@" not in caplog.text
