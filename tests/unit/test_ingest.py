"""project_events and row_key: event rows -> the newest pending version per (sync, key)."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core.events import Change, InvalidEvent, SourceChange
from service.core.metrics import Metrics
from service.core.rows import PendingWrite, SnapshotProgress, SyncRoute
from service.ingest import MAX_KEY_LENGTH, REJECT_REASONS, Ingest, project_events, row_key
from service.source.decode import decode_event
from service.source.kafka import _NON_FINITE_HINT
from tests.support import change

ROUTE = SyncRoute("10", "id", ("id", "email"))
ROUTES = {"1": (ROUTE,)}


def event(op: str = "upsert", *rows: dict[str, Any], model: str = "1") -> Change:
    return change({"modelId": model, "op": op, "rows": list(rows)})


def by_key(writes: list[PendingWrite]) -> dict[str, PendingWrite]:
    return {w.key: w for w in writes}


def test_a_row_is_projected_onto_the_referenced_columns_only() -> None:
    writes, result = project_events(
        [event("upsert", {"id": 1, "email": "a@x", "secret": "s"})], ROUTES
    )
    [write] = writes
    assert (write.sync_id, write.key, write.op) == ("10", "1", "upsert")
    assert write.data is not None
    assert orjson.loads(write.data) == {"id": 1, "email": "a@x"}
    assert result.rows == 1 and result.sync_ids == {"10"}


@pytest.mark.parametrize("careful", [False, True])
def test_a_projected_row_holds_no_more_memory_than_its_json(careful: bool) -> None:
    # orjson's own result keeps a buffer of several KiB per call (3.12 and later); rows wait in
    # memory by the thousand, so what ingest keeps is sized to the JSON.
    rows = [{"id": i, "email": f"user{i}@example.com"} for i in range(2000)]
    events = [event("upsert", *rows[i : i + 100]) for i in range(0, len(rows), 100)]
    suspect = set(range(len(events))) if careful else set()
    tracemalloc.start()
    try:
        writes, _ = project_events(events, ROUTES, suspect=suspect)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    json_bytes = sum(len(w.data or b"") for w in writes)
    assert len(writes) == 2000
    # The JSON (about 40 bytes a row), its bytes object, the write record and the hash.
    assert held / len(writes) < 400 + json_bytes / len(writes)


@given(
    st.permutations(["id", "email"]),
    st.dictionaries(st.sampled_from(["x", "email"]), st.integers(), max_size=2),
)
def test_the_projection_depends_on_the_referenced_values_only(
    order: list[str], extra: dict[str, int]
) -> None:
    """Rows with just the referenced columns, in their order, skip the copy: same bytes."""
    values = {"id": 7, "email": "a@x"}
    row = {name: values[name] for name in order} | {k: v for k, v in extra.items() if k != "email"}
    [write], _ = project_events([event("upsert", row)], ROUTES)
    [plain], _ = project_events([event("upsert", {"id": 7, "email": "a@x"})], ROUTES)
    assert write.data == plain.data == b'{"id":7,"email":"a@x"}'
    assert write.row_hash == plain.row_hash


def test_a_referenced_column_missing_from_the_row_is_projected_as_null() -> None:
    [write], _ = project_events([event("upsert", {"id": 1})], ROUTES)
    assert write.data is not None
    assert orjson.loads(write.data) == {"id": 1, "email": None}


def test_unreferenced_columns_do_not_change_the_hash() -> None:
    [a], _ = project_events([event("upsert", {"id": 1, "email": "a@x", "x": 1})], ROUTES)
    [b], _ = project_events([event("upsert", {"id": 1, "email": "a@x", "x": 2})], ROUTES)
    assert a.row_hash is not None
    assert a.row_hash == b.row_hash


def test_a_referenced_column_changes_the_hash() -> None:
    [a], _ = project_events([event("upsert", {"id": 1, "email": "a@x"})], ROUTES)
    [b], _ = project_events([event("upsert", {"id": 1, "email": "b@x"})], ROUTES)
    assert a.row_hash != b.row_hash


def test_the_last_row_wins_for_a_key_repeated_in_one_event() -> None:
    ev = event("upsert", {"id": 1, "email": "old"}, {"id": 1, "email": "new"})
    writes, result = project_events([ev], ROUTES)
    [write] = writes
    assert write.data is not None
    assert orjson.loads(write.data)["email"] == "new"
    assert result.rows == 1


def test_the_last_row_wins_across_events_of_a_batch() -> None:
    first = event("upsert", {"id": 1, "email": "old"}, {"id": 2, "email": "b"})
    second = event("upsert", {"id": 1, "email": "new"})
    writes = by_key(project_events([first, second], ROUTES)[0])
    assert writes["1"].data is not None
    assert orjson.loads(writes["1"].data)["email"] == "new"
    assert set(writes) == {"1", "2"}


def test_a_delete_after_an_upsert_in_the_batch_wins() -> None:
    writes, _ = project_events(
        [event("upsert", {"id": 1, "email": "a"}), event("delete", {"id": 1})], ROUTES
    )
    [write] = writes
    assert (write.op, write.data, write.row_hash) == ("delete", None, None)


def test_a_delete_produces_a_delete_with_no_data() -> None:
    writes, result = project_events([event("delete", {"id": 5})], ROUTES)
    [write] = writes
    assert (write.sync_id, write.key, write.op) == ("10", "5", "delete")
    assert write.data is None and write.row_hash is None
    assert result.rejected == 0


def test_a_snapshot_row_is_pending_as_an_upsert() -> None:
    ev = change({"modelId": "1", "op": "snapshot", "snapshotId": "s", "rows": [{"id": 1}]})
    [write], _ = project_events([ev], ROUTES)
    assert write.op == "upsert"


@pytest.mark.parametrize(
    "row",
    [{"email": "a"}, {"id": None}, {"id": ""}, {"id": {"a": 1}}, {"id": [1]}],
    ids=["missing", "null", "empty-string", "object", "list"],
)
def test_a_row_without_a_usable_key_is_rejected_and_counted(row: dict[str, Any]) -> None:
    writes, result = project_events([event("upsert", row, {"id": 2})], ROUTES)
    assert [w.key for w in writes] == ["2"]
    assert result.rejected == 1
    assert result.rows == 1


def test_a_delete_without_a_key_is_rejected() -> None:
    writes, result = project_events([event("delete", {"email": "x"})], ROUTES)
    assert writes == []
    assert result.rejected == 1


def test_events_for_unrouted_models_are_counted_and_skipped() -> None:
    events = [event("upsert", {"id": 1}, model="2"), event("upsert", {"id": 1}, model="3")]
    writes, result = project_events(events, ROUTES)
    assert writes == []
    assert result.unrouted_events == 2
    assert result.sync_ids == set()


def test_a_model_routed_to_two_syncs_writes_one_row_per_sync() -> None:
    other = SyncRoute("11", "id", ("id",))
    writes, result = project_events(
        [event("upsert", {"id": 1, "email": "a"})], {"1": (ROUTE, other)}
    )
    assert sorted((w.sync_id, w.key) for w in writes) == [("10", "1"), ("11", "1")]
    assert result.sync_ids == {"10", "11"}
    eleven = next(w for w in writes if w.sync_id == "11")
    assert eleven.data is not None
    assert orjson.loads(eleven.data) == {"id": 1}


def test_emitted_at_travels_as_epoch_seconds() -> None:
    ev = change(
        {"modelId": "1", "op": "upsert", "rows": [{"id": 1}], "emittedAt": "1970-01-01T00:01:00Z"}
    )
    [write], _ = project_events([ev], ROUTES)
    assert write.emitted_at == 60.0


@pytest.mark.parametrize(
    ("value", "key"),
    [(1, "1"), ("a", "a"), (0, "0"), (True, "true"), (False, "false"), (2.5, "2.5")],
)
def test_row_key_turns_scalars_into_strings(value: object, key: str) -> None:
    assert row_key(value) == key


@pytest.mark.parametrize("value", [None, "", {}, [], {"a": 1}, [1]])
def test_row_key_is_none_for_unusable_values(value: object) -> None:
    assert row_key(value) is None


# --- one bad row rejects that row alone -------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too, both signs
    | st.integers(min_value=2**63 - 2, max_value=2**64 + 2)
    | st.floats()  # NaN and infinities included
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "", "\u0000", "é", "\U0001f600"])
    | st.text()
    | st.text(alphabet=st.characters(), min_size=MAX_KEY_LENGTH - 2, max_size=MAX_KEY_LENGTH + 2)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def _raw(rows: list[dict[str, Any]]) -> bytes:
    """The message a producer would write; Python's json writes NaN and big ints as they are."""
    return json.dumps({"modelId": "1", "op": "upsert", "rows": rows}).encode()


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({"id": _values, "email": _values}), min_size=1, max_size=6))
def test_every_row_is_either_kept_exactly_or_rejected_with_a_reason(
    rows: list[dict[str, Any]],
) -> None:
    raw = _raw(rows)
    try:
        ev = decode_event(b"1", raw)
    except InvalidEvent:
        return  # the whole message is not JSON (a lone surrogate): the DLQ's, not a row's
    suspect = {0} if _NON_FINITE_HINT.search(raw) else set()
    snap = SnapshotProgress()
    writes, result = project_events([ev], ROUTES, snap, suspect=suspect)

    assert sum(result.rejected_by.values()) == result.rejected == len(snap.rejected)
    assert set(result.rejected_by) <= set(REJECT_REASONS)
    for refused in snap.rejected:
        orjson.loads(refused.data)  # kept, readable, whatever the row held
    kept = by_key(writes)
    versions: dict[str, list[dict[str, Any]]] = {}
    for row in ev.rows:
        key = row_key(row["id"])
        if key is not None and len(key) <= MAX_KEY_LENGTH:
            versions.setdefault(key, []).append(row)
    assert set(kept) <= set(versions)
    for key, write in kept.items():
        assert write.data is not None
        stored = orjson.loads(write.data)
        # What is stored is what one of the key's rows said (the last one ingest could take),
        # never a value changed on the way (NaN -> null).
        assert any(
            _same(stored["id"], row["id"]) and _same(stored["email"], row["email"])
            for row in versions[key]
        )
    assert len(kept) + result.rejected >= len(versions)


def _outcome(
    events: list[Change], event_routes: list[dict[str, tuple[SyncRoute, ...]]]
) -> tuple[list[tuple[Any, ...]], dict[str, int], list[tuple[str, str, bytes]]]:
    snap = SnapshotProgress()
    writes, result = project_events(events, ROUTES, snap, event_routes=event_routes)
    kept = [(w.sync_id, w.key, w.op, w.data, w.row_hash, w.source) for w in writes]
    refused = sorted((r.sync_id, r.reason, r.data) for r in snap.rejected)
    return kept, result.rejected_by, refused


_batch_rows = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 4) | st.sampled_from(["", None, "k"]), "email": _values}
    ),
    max_size=4,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["upsert", "delete"]), _batch_rows), max_size=6))
def test_a_batch_projects_as_its_events_would_one_by_one(
    batch: list[tuple[str, list[dict[str, Any]]]],
) -> None:
    """Events routed alike are projected a run at a time, a run orjson refuses event by event:
    the same versions, refusals and reasons as each event on its own, in order (an index of
    its own for each event keeps runs from forming)."""
    events = []
    for op, rows in batch:
        try:
            events.append(decode_event(None, _raw(rows).replace(b'"upsert"', f'"{op}"'.encode())))
        except InvalidEvent:
            continue
    suspect = any(_NON_FINITE_HINT.search(_raw(rows)) for _, rows in batch)
    if suspect:
        return  # NaN and infinities are checked event by event either way
    shared = [ROUTES] * len(events)
    alone = [{"1": tuple(list(ROUTES["1"]))} for _ in events]  # a tuple of its own each
    assert _outcome(events, shared) == _outcome(events, alone)


def test_a_run_refused_by_orjson_is_done_again_from_its_first_event() -> None:
    big = 123456789012345678901234567890
    first = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": %d}, {"id": 2, "email": "b"}]}'  # noqa: E501
    rest = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 3, "email": "c"}]}'
    snap = SnapshotProgress()
    events = [decode_event(None, first % big), decode_event(None, rest)]

    writes, result = project_events(events, ROUTES, snap)

    assert sorted(w.key for w in writes) == ["2", "3"]
    assert result.rejected_by == {"unencodable": 1}


def test_an_integer_beyond_64_bits_rejects_its_row_alone() -> None:
    raw = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 7, "email": 123456789012345678901234567890}, {"id": 8, "email": "b"}]}'  # noqa: E501
    snap = SnapshotProgress()
    writes, result = project_events([decode_event(None, raw)], ROUTES, snap)
    assert [w.key for w in writes] == ["8"]
    assert result.rejected_by == {"unencodable": 1}
    [refused] = snap.rejected
    assert "64-bit" in refused.reason
    assert orjson.loads(refused.data) == {"id": 7, "email": "123456789012345678901234567890"}


def test_nan_and_infinity_reject_their_rows_instead_of_becoming_null() -> None:
    raw = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": NaN}, {"id": 2, "email": 1e999}, {"id": 3, "email": "NaN"}]}'  # noqa: E501
    assert _NON_FINITE_HINT.search(raw)
    snap = SnapshotProgress()
    writes, result = project_events([decode_event(None, raw)], ROUTES, snap, suspect={0})
    assert [w.key for w in writes] == ["3"]  # the string "NaN" is a string
    assert result.rejected_by == {"non_finite": 2}


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ({"a": 1}, "key_type"),
        ([1, 2], "key_type"),
        (None, "missing_key"),
        ("", "missing_key"),
        ("k" * (MAX_KEY_LENGTH + 1), "key_too_long"),
        ("a\x00b", "key_invalid"),
    ],
)
def test_a_key_that_cannot_identify_a_row_rejects_that_row(key: object, reason: str) -> None:
    snap = SnapshotProgress()
    ev = event("upsert", {"id": key, "email": "a"}, {"id": 2, "email": "b"})
    writes, result = project_events([ev], ROUTES, snap)
    assert [w.key for w in writes] == ["2"]
    assert result.rejected_by == {reason: 1}


def test_a_snapshot_does_not_list_a_key_too_long_to_store() -> None:
    ev = change(
        {
            "modelId": "1",
            "op": "snapshot",
            "snapshotId": "s",
            "rows": [{"id": "k" * (MAX_KEY_LENGTH + 1)}, {"id": 2}],
        }
    )
    snap = SnapshotProgress()
    project_events([ev], ROUTES, snap)
    assert snap.keys == [("10", "s", "2")]


def test_events_are_routed_by_the_index_of_their_topics_workspace() -> None:
    other = {"1": (SyncRoute("20", "id", ("id",)),)}
    events = [event("upsert", {"id": 1}), event("upsert", {"id": 2})]
    writes, result = project_events(events, {}, event_routes=[ROUTES, other])
    assert sorted((w.sync_id, w.key) for w in writes) == [("10", "1"), ("20", "2")]
    _, result = project_events(events, {}, event_routes=[{}, {}])
    assert result.unrouted_events == 2


async def test_rejections_are_counted_by_reason() -> None:
    class Store:
        async def write_pending(self, writes: Any, snapshot: Any) -> int:
            return len(writes)

    metrics = Metrics()
    ingest = Ingest(Store(), metrics)  # type: ignore[arg-type]
    raw = b'{"modelId": "1", "op": "upsert", "rows": [{"id": 1, "email": 99999999999999999999999}, {"email": "x"}]}'  # noqa: E501
    await ingest.write([decode_event(None, raw)], ROUTES)
    sample = metrics.registry.get_sample_value
    assert sample("sync_rows_rejected_total", {"reason": "unencodable"}) == 1
    assert sample("sync_rows_rejected_total", {"reason": "missing_key"}) == 1


# --- changes decoded from Debezium records ------------------------------------------------------

SOURCE_ROUTES = {
    "source:3": (SyncRoute("10", "id", ("id", "email")), SyncRoute("11", "id", ("id", "notes")))
}


def _change(op: str = "upsert", row: dict[str, Any] | None = None, **fields: Any) -> SourceChange:
    rows = [row] if row is not None else []
    return SourceChange(model_id="source:3", op=op, rows=rows, **fields)


def test_one_record_feeds_each_model_over_its_table() -> None:
    snapshot = SnapshotProgress()
    row = {"id": 1, "email": "a@example.com", "notes": "n"}
    writes, found = project_events([_change("upsert", row)], SOURCE_ROUTES, snapshot)
    assert {(w.sync_id, w.data) for w in writes} == {
        ("10", b'{"id":1,"email":"a@example.com"}'),
        ("11", b'{"id":1,"notes":"n"}'),
    }
    assert found.rejected == 0


def test_a_row_that_could_not_be_converted_is_rejected_for_each_model() -> None:
    snapshot = SnapshotProgress()
    bad = _change("upsert", {"id": 1, "price": "AA=="}, rejected="price: decimal bytes ...")
    writes, found = project_events([bad], SOURCE_ROUTES, snapshot)
    assert writes == []
    assert found.rejected_by == {"unconvertible": 2}
    assert [(r.sync_id, r.reason) for r in snapshot.rejected] == [
        ("10", "price: decimal bytes ..."),
        ("11", "price: decimal bytes ..."),
    ]


def test_a_dropped_or_unsent_column_rejects_the_row_only_for_models_reading_it() -> None:
    snapshot = SnapshotProgress()
    dropped = _change("upsert", {"id": 1, "email": "a@example.com"})  # no "notes" any more
    toasted = _change("upsert", {"id": 2, "notes": "n"}, unavailable=("email",))
    writes, found = project_events([dropped, toasted], SOURCE_ROUTES, snapshot)
    assert sorted((w.sync_id, w.key) for w in writes) == [("10", "1"), ("11", "2")]
    assert found.rejected_by == {"missing_column": 1, "unavailable": 1}
    reasons = {r.sync_id: r.reason for r in snapshot.rejected}
    assert "notes" in reasons["11"] and "dropped" in reasons["11"]
    assert "email" in reasons["10"] and "REPLICA IDENTITY FULL" in reasons["10"]


def test_a_delete_needs_only_the_key_and_a_truncate_reaches_every_model() -> None:
    snapshot = SnapshotProgress()
    events = [_change("delete", {"id": 1}, strict=False), _change("delete", truncate=True)]
    writes, _ = project_events(events, SOURCE_ROUTES, snapshot)
    assert sorted((w.sync_id, w.key, w.op) for w in writes) == [
        ("10", "1", "delete"),
        ("11", "1", "delete"),
    ]
    assert snapshot.truncated == ["10", "11"]
    # A truncate ends its part of the batch, like a closing snapshot.
    parts = Ingest(None, Metrics()).prepare(  # type: ignore[arg-type]
        [*events, _change("upsert", {"id": 2, "email": "e", "notes": "n"})], SOURCE_ROUTES
    )
    assert [len(p.writes) for p in parts] == [2, 2]
    assert parts[0].snapshot.truncated == ["10", "11"]
