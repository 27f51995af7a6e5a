"""The streamed path's store contract (rows sent straight from ingest, written once as their
outcome), on SQLite and on PostgreSQL."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.core.rows import (
    MAYBE_HELD,
    PendingRow,
    PendingWrite,
    RowFailure,
    RowOutcomes,
    SnapshotProgress,
)
from service.ingest import row_hash
from service.runner.planner import plan_changes
from service.store.base import Store
from tests.contract.conftest import StoreFactory
from tests.contract.test_store import delivered as sent

EVERYTHING = 10**12


def version(
    key: str, v: int = 1, sync_id: str = "1", emitted_at: float = 1_700_000_000.5
) -> PendingWrite:
    body = orjson.dumps({"id": key, "v": v})
    return PendingWrite(sync_id, key, "upsert", body, row_hash(body), emitted_at)


def hash_of(key: str, v: int = 1) -> bytes:
    return version(key, v).row_hash or b""


async def page(store: Store, sync_id: str = "1") -> dict[str, PendingRow]:
    return {r.key: r for r in await store.pending_page(sync_id, 0, EVERYTHING, 100_000)}


async def sync_through_runner(store: Store, rows: list[PendingWrite]) -> None:
    """Rows written pending, read and delivered the way a run does it."""
    await store.write_pending(rows)
    keys = {r.key for r in rows}
    found = [r for r in (await page(store, rows[0].sync_id)).values() if r.key in keys]
    await store.record_outcomes(
        rows[0].sync_id, RowOutcomes(delivered=[sent(r) for r in found]), 1.0
    )


def source(found: Any) -> Any:
    return orjson.loads(found.source or b"null")


# --- reads -------------------------------------------------------------------------------------


async def test_held_says_what_the_destination_holds_and_what_is_pending(store: Store) -> None:
    await sync_through_runner(store, [version("synced"), version("both")])
    await store.write_pending([version("both", 2), version("waiting")])
    await store.write_pending([version("other", sync_id="2")])
    before = await page(store)

    held = await store.held("1", ["synced", "both", "waiting", "other", "unknown", "synced"])
    assert held == {
        "synced": (hash_of("synced"), False),
        "both": (hash_of("both"), True),
        "waiting": (None, True),
    }
    assert await store.held("2", ["other", "synced"]) == {"other": (None, True)}
    assert await store.held("1", []) == {}
    assert await page(store) == before  # a read: nothing moved


async def test_settled_pages_give_the_held_hash_of_every_key_with_nothing_pending(
    store: Store,
) -> None:
    await sync_through_runner(store, [version(k) for k in ("c", "a", "e", "b", "both")])
    await store.write_pending([version("both", 2), version("waiting")])
    await sync_through_runner(store, [version("a", sync_id="2")])
    before = await page(store)

    first = await store.settled_page("1", "", 2)
    assert first == [("a", hash_of("a")), ("b", hash_of("b"))]
    second = await store.settled_page("1", first[-1][0], 2)
    assert second == [("c", hash_of("c")), ("e", hash_of("e"))]  # "both" is pending
    assert await store.settled_page("1", "e", 2) == []
    assert await store.settled_page("2", "", 10) == [("a", hash_of("a"))]
    assert await store.settled_page("3", "", 10) == []
    assert await page(store) == before  # a read: nothing moved


async def test_keys_list_in_the_order_of_their_bytes_in_every_store(store: Store) -> None:
    """Both stores compare keys byte by byte (PostgreSQL's key columns are COLLATE "C"), so
    pages of keys come in one order whatever the database's locale."""
    keys = ["b", "B", "a", "Z", "é", "e", "10", "9", "a b", "a-b"]
    await sync_through_runner(store, [version(k) for k in keys])

    listed = [key for key, _ in await store.settled_page("1", "", 100)]
    assert listed == sorted(keys, key=str.encode)
    assert [k for k, _ in await store.settled_page("1", "Z", 100)] == listed[
        listed.index("Z") + 1 :
    ]


async def test_rows_streamed_under_schema_version_9_carry_over(open_store: StoreFactory) -> None:
    """Version 10 changes how PostgreSQL compares keys; the rows stay as they were."""
    old = await open_store(schema_upto=9)
    await old.record_streamed(
        "1", [version("held"), version("Z")], [(version("failed"), "no")], 1.0
    )
    await old.close()

    store = await open_store()
    assert await store.held("1", ["held", "Z", "failed", "unknown"]) == {
        "held": (hash_of("held"), False),
        "Z": (hash_of("Z"), False),
        "failed": (None, True),
    }
    await store.record_streamed("1", [version("held", 2), version("new")], [], 2.0)
    assert await store.settled_page("1", "", 10) == [
        ("Z", hash_of("Z")),
        ("held", hash_of("held", 2)),
        ("new", hash_of("new")),
    ]


async def test_pending_among_and_syncs_with_pending(store: Store) -> None:
    await sync_through_runner(store, [version("synced"), version("both")])
    await store.write_pending([version("both", 2), version("waiting")])
    await sync_through_runner(store, [version("x", sync_id="2")])

    assert await store.pending_among("1", ["synced", "both", "waiting", "unknown"]) == {
        "both",
        "waiting",
    }
    assert await store.pending_among("2", ["x", "both"]) == set()
    assert await store.pending_among("1", []) == set()

    assert await store.syncs_with_pending(["1", "2", "3", "1"]) == {"1"}
    assert await store.syncs_with_pending([]) == set()
    rows = list((await page(store)).values())
    await store.record_outcomes("1", RowOutcomes(dropped=[(r.key, r.seq) for r in rows]), 2.0)
    assert await store.syncs_with_pending(["1", "2"]) == set()


async def test_a_sync_epoch_grows_with_each_write_that_plans_removals(store: Store) -> None:
    await sync_through_runner(store, [version("a"), version("b")])
    await sync_through_runner(store, [version("x", sync_id="2")])
    assert await store.sync_epochs(["1", "2", "unknown"]) == {}
    assert await store.sync_epochs([]) == {}

    # A snapshot that names every held key plans no removal: the epoch stays.
    await store.write_pending(
        [], SnapshotProgress(keys=[("1", "s1", "a"), ("1", "s1", "b")], closed=[("1", "s1")])
    )
    assert await store.sync_epochs(["1", "2"]) == {}
    # One that leaves "b" out plans its removal, and the epoch grows with it.
    await store.write_pending([], SnapshotProgress(keys=[("1", "s2", "a")], closed=[("1", "s2")]))
    assert (await page(store))["b"].op == "delete"
    assert await store.sync_epochs(["1", "2"]) == {"1": 1}
    # A truncated table removes the rest; a truncate of a table the sync holds nothing of
    # changes nothing.
    await store.write_pending([], SnapshotProgress(truncated=["1"]))
    assert await store.sync_epochs(["1", "2"]) == {"1": 2}
    await store.write_pending([], SnapshotProgress(truncated=["3"]))
    assert await store.sync_epochs(["1", "2", "3"]) == {"1": 2}


# --- delivered ---------------------------------------------------------------------------------


async def test_a_delivered_row_of_a_new_key_becomes_synced(store: Store) -> None:
    assert await store.record_streamed("1", [version("a")], [], 10.0) == []
    found = await store.synced_rows("1", ["a"])
    assert found["a"].row_hash == hash_of("a")
    assert source(found["a"]) == {"id": "a", "v": 1}
    assert await store.held("1", ["a"]) == {"a": (hash_of("a"), False)}
    assert await store.pending_counts() == {}
    assert await store.max_pending_seq("1") == 0

    # What the destination holds is known: the same version from ingest costs no write.
    assert await store.write_pending([version("a")]) == 0
    assert await store.write_pending([version("a", 2)]) == 1


async def test_a_delivered_row_of_a_synced_key_replaces_it(store: Store) -> None:
    await sync_through_runner(store, [version("a"), version("b")])
    assert await store.record_streamed("1", [version("a", 2)], [], 10.0) == []
    found = await store.synced_rows("1", ["a", "b"])
    assert (found["a"].row_hash, source(found["a"])) == (hash_of("a", 2), {"id": "a", "v": 2})
    assert found["b"].row_hash == hash_of("b")
    assert await store.pending_counts() == {}
    assert await store.pending_among("1", ["a", "b"]) == set()


async def test_a_delivered_row_of_a_key_requeued_meanwhile_stays_pending(store: Store) -> None:
    await sync_through_runner(store, [version("a"), version("b")])
    assert await store.requeue_synced("1") == 2
    runner = await page(store)  # a run reads the old versions ...
    failure = RowFailure("b", runner["b"].seq, "added", "HTTP 503")
    await store.record_outcomes("1", RowOutcomes(failed=[failure]), 5.0)

    # ... while newer ones are streamed and delivered.
    newer = [version("a", 2, emitted_at=7.5), version("b", 2)]
    assert sorted(await store.record_streamed("1", newer, [], 10.0)) == ["a", "b"]
    rows = await page(store)
    a, b = rows["a"], rows["b"]
    assert (a.op, a.data, a.row_hash, a.emitted_at) == (
        "upsert",
        {"id": "a", "v": 2},
        hash_of("a", 2),
        7.5,
    )
    assert a.synced_hash == hash_of("a", 2)  # the destination holds this version now
    assert min(a.seq, b.seq) > max(r.seq for r in runner.values())  # sent again
    assert (b.attempts, b.error, b.last_attempt_at) == (0, None, None)
    assert await store.max_pending_seq("1") == max(a.seq, b.seq)
    assert await store.pending_counts() == {"1": 2}
    assert await store.held("1", ["a"]) == {"a": (hash_of("a", 2), True)}

    # The run's older send, recorded later, does not clear the streamed version.
    await store.record_outcomes("1", RowOutcomes(delivered=[sent(runner["a"])]), 11.0)
    still = (await page(store))["a"]
    assert (still.seq, still.data) == (a.seq, {"id": "a", "v": 2})
    listed, _ = await store.list_pending("1", failed_only=False, limit=10, offset=0)
    assert [(r.key, r.seq) for r in listed] == [("a", a.seq), ("b", b.seq)]
    assert [(r.data, r.row_hash) for r in listed] == [(None, None)] * 2  # a listing holds no data
    assert (await page(store))["b"].data == {"id": "b", "v": 2}

    # The run that sends it again clears it.
    await store.record_outcomes("1", RowOutcomes(delivered=[sent(still, "changed")]), 12.0)
    assert await store.pending_among("1", ["a", "b"]) == {"b"}
    assert (await store.synced_rows("1", ["a"]))["a"].row_hash == hash_of("a", 2)


async def test_a_delivered_row_of_a_key_planned_as_removed_stays_pending(store: Store) -> None:
    await sync_through_runner(store, [version("a"), version("b")])
    # A snapshot without "b" closes: "b" is planned as removed.
    await store.write_pending(
        [version("a")], SnapshotProgress(keys=[("1", "s1", "a")], closed=[("1", "s1")])
    )
    runner = await page(store)
    assert runner["b"].op == "delete"

    assert await store.record_streamed("1", [version("b", 2)], [], 10.0) == ["b"]
    b = (await page(store))["b"]
    assert (b.op, b.data, b.synced_hash) == ("upsert", {"id": "b", "v": 2}, hash_of("b", 2))
    assert b.seq > runner["b"].seq

    # The planned removal, sent and recorded later, neither forgets the key nor clears it.
    await store.record_outcomes("1", RowOutcomes(delivered=[sent(runner["b"], "removed")]), 11.0)
    still = (await page(store))["b"]
    assert (still.op, still.seq, still.data) == ("upsert", b.seq, {"id": "b", "v": 2})
    assert await store.pending_among("1", ["a", "b"]) == {"b"}


# --- failed ------------------------------------------------------------------------------------


async def test_a_failed_row_becomes_pending_with_its_error(store: Store) -> None:
    await store.write_pending([version("w")])
    before = await store.max_pending_seq("1")

    assert await store.record_streamed(
        "1", [], [(version("f", emitted_at=3.5), "HTTP 500")], 50.0
    ) == ["f"]
    f = (await page(store))["f"]
    assert (f.op, f.data, f.row_hash, f.emitted_at) == (
        "upsert",
        {"id": "f", "v": 1},
        hash_of("f"),
        3.5,
    )
    assert (f.attempts, f.error, f.last_attempt_at, f.synced_hash) == (1, "HTTP 500", 50.0, None)
    assert f.seq > before
    assert await store.max_pending_seq("1") == f.seq
    assert await store.pending_counts() == {"1": 2}
    assert await store.failed_counts() == {"1": 1}
    failed, more = await store.list_pending("1", failed_only=True, limit=10, offset=0)
    assert ([(r.key, r.error, r.attempts) for r in failed], more) == ([("f", "HTTP 500", 1)], False)
    assert await store.synced_rows("1", ["f"]) == {}
    assert await store.held("1", ["f"]) == {"f": (None, True)}

    # The runner's retry delivers it: synced, no longer pending.
    await store.record_outcomes("1", RowOutcomes(delivered=[sent(f)]), 60.0)
    found = await store.synced_rows("1", ["f"])
    assert (found["f"].row_hash, source(found["f"])) == (hash_of("f"), {"id": "f", "v": 1})
    assert await store.pending_among("1", ["f", "w"]) == {"w"}
    assert await store.failed_counts() == {}


async def test_a_failed_row_of_a_known_key_keeps_what_the_destination_holds(store: Store) -> None:
    await sync_through_runner(store, [version("a")])
    assert await store.record_streamed("1", [], [(version("a", 2), "timeout")], 20.0) == ["a"]
    first = (await page(store))["a"]
    assert (first.data, first.synced_hash, first.attempts) == ({"id": "a", "v": 2}, hash_of("a"), 1)

    # Failing again (a newer version) counts one more attempt under a new seq.
    assert await store.record_streamed("1", [], [(version("a", 3), "HTTP 502")], 21.0) == ["a"]
    again = (await page(store))["a"]
    assert (again.data, again.error, again.attempts, again.last_attempt_at) == (
        {"id": "a", "v": 3},
        "HTTP 502",
        2,
        21.0,
    )
    assert again.seq > first.seq
    assert again.synced_hash == hash_of("a")
    assert (await store.synced_rows("1", ["a"]))["a"].row_hash == hash_of("a")

    # A run's send of the older version, recorded later, leaves the newer one pending.
    await store.record_outcomes("1", RowOutcomes(delivered=[sent(first)]), 22.0)
    assert (await page(store))["a"].data == {"id": "a", "v": 3}


def removal(key: str, v: int = 1, emitted_at: float = 4.5) -> PendingWrite:
    """A streamed removal kept pending: a delete carrying the source columns it sends."""
    return PendingWrite("1", key, "delete", orjson.dumps({"id": key, "v": v}), None, emitted_at)


async def test_a_removal_kept_pending_is_planned_as_a_removal_of_what_may_be_held(
    store: Store,
) -> None:
    await sync_through_runner(store, [version("held")])
    await store.write_pending([version("waiting")])

    left = await store.record_streamed(
        "1",
        [],
        [
            (removal("new"), "HTTP 409"),
            (removal("held", 2), "HTTP 409"),
            (removal("waiting"), None),
        ],
        40.0,
    )
    assert sorted(left) == ["held", "new", "waiting"]
    rows = await page(store)
    # A key the store held no version of is taken as held, so the removal goes; a known
    # held version stays what the destination holds.
    assert {k: (r.op, r.synced_hash, r.synced_source) for k, r in rows.items()} == {
        "new": ("delete", MAYBE_HELD, {"id": "new", "v": 1}),
        "held": ("delete", hash_of("held"), {"id": "held", "v": 2}),
        "waiting": ("delete", MAYBE_HELD, {"id": "waiting", "v": 1}),
    }
    # A failed removal counts an attempt with its error; one never sent counts none.
    assert {k: (r.attempts, r.error, r.last_attempt_at) for k, r in rows.items()} == {
        "new": (1, "HTTP 409", 40.0),
        "held": (1, "HTTP 409", 40.0),
        "waiting": (0, None, None),
    }
    assert await store.failed_counts() == {"1": 2}
    assert await store.held("1", ["new"]) == {"new": (MAYBE_HELD, True)}
    # A newer version of such a key goes out as changed: a version may be held.
    assert await store.write_pending([version("new", 3)]) == 1
    plan = plan_changes(list((await page(store)).values()), "mirror", lambda row: row)
    assert sorted((c.op, c.key) for c in plan.changes) == [
        ("changed", "new"),
        ("removed", "held"),
        ("removed", "waiting"),
    ]

    # Once the removals are sent, the store forgets the keys.
    found = await page(store)
    await store.record_outcomes(
        "1",
        RowOutcomes(delivered=[sent(found[k], "removed") for k in ("held", "waiting")]),
        41.0,
    )
    assert await store.held("1", ["held", "waiting"]) == {}


async def test_delivered_and_failed_in_one_call(store: Store, open_store: StoreFactory) -> None:
    await sync_through_runner(store, [version("held"), version("requeued")])
    await store.requeue_synced("1")
    await store.record_outcomes(
        "1", RowOutcomes(dropped=[("held", (await page(store))["held"].seq)]), 1.0
    )
    before = await store.max_pending_seq("1")

    left = await store.record_streamed(
        "1",
        [version("held", 2), version("requeued", 2), version("new")],
        [(version("bad"), "HTTP 400"), (version("worse"), "HTTP 422")],
        30.0,
    )
    assert sorted(left) == ["bad", "requeued", "worse"]
    rows = await page(store)
    assert set(rows) == {"bad", "requeued", "worse"}
    seqs = [r.seq for r in rows.values()]
    assert len(set(seqs)) == 3 and min(seqs) > before
    assert set(await store.synced_rows("1", ["held", "requeued", "new", "bad"])) == {
        "held",
        "requeued",
        "new",
    }

    # Seqs handed out later are greater still, in this store and in one opened afterwards.
    await store.write_pending([version("later")])
    later = (await page(store))["later"].seq
    assert later > max(seqs)
    await store.close()
    reopened = await open_store()
    await reopened.write_pending([version("last")])
    assert (await page(reopened))["last"].seq > later
    again = await page(reopened)
    assert {k: again[k].seq for k in rows} == {k: r.seq for k, r in rows.items()}


async def test_record_streamed_refuses_what_it_cannot_record(store: Store) -> None:
    cases = [
        ([version("a"), version("a", 2)], []),
        ([version("a")], [(version("a", 2), "boom")]),
        ([], [(version("a"), "boom"), (version("a", 2), "boom")]),
        ([version("a", sync_id="2")], []),
        ([PendingWrite("1", "a", "delete", None, None, None)], []),
        ([removal("a")], []),
        ([], [(PendingWrite("1", "a", "delete", None, None, None), "boom")]),
        ([], [(PendingWrite("1", "a", "delete", b"{}", b"h", None), "boom")]),
        ([], [(PendingWrite("1", "a", "upsert", b"{}", None, None), "boom")]),
        ([PendingWrite("1", "a", "upsert", b"{}", b"short", None)], []),
    ]
    for delivered, failed in cases:
        with pytest.raises(ValueError):
            await store.record_streamed("1", delivered, failed, 1.0)
    assert await store.held("1", ["a"]) == {}
    assert await store.record_streamed("1", [], [], 1.0) == []


# --- a batch -----------------------------------------------------------------------------------


async def test_five_thousand_keys_in_one_read_and_one_record(store: Store) -> None:
    keys = [f"k{i:04d}" for i in range(5000)]
    await sync_through_runner(store, [version(k) for k in keys[:2500]])
    await store.write_pending([version(k, 2) for k in keys[:500]])  # pending again

    held = await store.held("1", [*keys, "missing"])
    assert len(held) == 2500
    assert held[keys[0]] == (hash_of(keys[0]), True)
    assert held[keys[2499]] == (hash_of(keys[2499]), False)
    assert sum(pending for _, pending in held.values()) == 500

    delivered = [version(k, 3) for k in keys[:4000]]
    failed = [(version(k, 3), f"HTTP 500 for {k}") for k in keys[4000:]]
    left = await store.record_streamed("1", delivered, failed, 40.0)
    expected = {*keys[:500], *keys[4000:]}
    assert len(left) == len(expected) and set(left) == expected

    assert await store.pending_among("1", keys) == expected
    assert await store.pending_counts() == {"1": 1500}
    assert await store.failed_counts() == {"1": 1000}
    held = await store.held("1", keys)
    assert held[keys[10]] == (hash_of(keys[10], 3), True)
    assert held[keys[3999]] == (hash_of(keys[3999], 3), False)
    # Every delivered row's hash landed on its own key (the batch's hashes are one blob).
    assert [held[k][0] for k in keys[:4000]] == [hash_of(k, 3) for k in keys[:4000]]
    assert held[keys[4999]] == (None, True)
    synced = await store.synced_rows("1", keys)
    assert len(synced) == 4000
    assert all(source(synced[k]) == {"id": k, "v": 3} for k in keys[:4000])

    rows = await page(store)
    assert set(rows) == expected
    assert all(r.data == {"id": r.key, "v": 3} for r in rows.values())
    assert rows[keys[4321]].error == f"HTTP 500 for {keys[4321]}"
    assert await store.max_pending_seq("1") == max(r.seq for r in rows.values())
