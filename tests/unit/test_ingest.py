"""project_events and row_key: event rows -> the newest pending version per (sync, key)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.events import ChangeEvent
from service.core.rows import PendingWrite, SyncRoute
from service.ingest import project_events, row_key

ROUTE = SyncRoute("10", "id", ("id", "email"))
ROUTES = {"1": (ROUTE,)}


def event(op: str = "upsert", *rows: dict[str, Any], model: str = "1") -> ChangeEvent:
    return ChangeEvent.model_validate({"modelId": model, "op": op, "rows": list(rows)})


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
    ev = ChangeEvent.model_validate(
        {"modelId": "1", "op": "snapshot", "snapshotId": "s", "rows": [{"id": 1}]}
    )
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
    ev = ChangeEvent.model_validate(
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
