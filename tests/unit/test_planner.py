"""plan_changes: pending rows against the rows last sent -> added/changed/removed or dropped."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core.models import SyncConfiguration, SyncMode
from service.core.rows import MAYBE_HELD, PendingRow, SyncedRow
from service.runner.mapping import compile_mappings
from service.runner.planner import MODE_OPS, Plan
from service.runner.planner import plan_changes as plan_page

MAPPER = compile_mappings(
    SyncConfiguration.model_validate(
        {"mappings": [{"from": "id", "to": "id"}, {"from": "email", "to": "email_address"}]}
    )
)


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def upsert(key: str, data: dict[str, Any], seq: int = 1) -> PendingRow:
    return PendingRow(key, seq, "upsert", data, _hash(orjson.dumps(data)), emitted_at=None)


def delete(key: str, seq: int = 1) -> PendingRow:
    return PendingRow(key, seq, "delete", None, None, emitted_at=None)


def synced(key: str, source: dict[str, Any]) -> SyncedRow:
    """A row as last synced: the hash of its source columns and those columns."""
    raw = orjson.dumps(source)
    return SyncedRow(key, _hash(raw), raw)


def plan_changes(
    pending: list[PendingRow], held: dict[str, SyncedRow], mode: SyncMode, mapper: Any, **kw: Any
) -> Plan:
    """The planner on a page as the store reads it: each row with what the destination holds."""
    page = []
    for row in pending:
        previous = held.get(row.key)
        if previous is None:
            page.append(row)
        else:
            source = orjson.loads(previous.source or b"{}") if row.op == "delete" else None
            page.append(replace(row, synced_hash=previous.row_hash, synced_source=source))
    return plan_page(page, mode, mapper, **kw)


def ops(plan: Any) -> dict[str, str]:
    return {change.key: change.op for change in plan.changes}


ALICE = {"id": 1, "email": "a@x"}
BOB = {"id": 2, "email": "b@x"}


def test_a_key_never_synced_is_added_with_mapped_data() -> None:
    plan = plan_changes([upsert("1", ALICE, seq=7)], {}, "upsert", MAPPER)
    [change] = plan.changes
    assert (change.op, change.key, change.seq) == ("added", "1", 7)
    assert change.data == {"id": 1, "email_address": "a@x"}
    assert change.row_hash == _hash(orjson.dumps(ALICE))
    assert plan.dropped == [] and plan.rejected == []


def test_a_key_whose_hash_differs_is_changed() -> None:
    new = {"id": 1, "email": "new@x"}
    plan = plan_changes([upsert("1", new)], {"1": synced("1", ALICE)}, "upsert", MAPPER)
    assert ops(plan) == {"1": "changed"}
    assert plan.changes[0].data == {"id": 1, "email_address": "new@x"}


def test_an_unchanged_row_is_dropped_not_sent() -> None:
    plan = plan_changes([upsert("1", ALICE, seq=3)], {"1": synced("1", ALICE)}, "mirror", MAPPER)
    assert plan.changes == []
    assert plan.dropped == [("1", 3)]


def test_delete_of_a_synced_key_is_removed_carrying_the_data_last_sent() -> None:
    plan = plan_changes([delete("1", seq=4)], {"1": synced("1", ALICE)}, "mirror", MAPPER)
    [change] = plan.changes
    assert (change.op, change.key, change.seq) == ("removed", "1", 4)
    assert change.data == {"id": 1, "email_address": "a@x"}  # mapped from the source kept
    assert change.row_hash is None


def test_a_removal_whose_mapping_fails_is_rejected() -> None:
    mapper = compile_mappings(
        SyncConfiguration.model_validate(
            {"mappings": [{"type": "template", "to": "x", "template": "{{ n | divided_by: 0 }}"}]}
        )
    )
    row = PendingRow("1", 4, "delete", None, None, None, synced_hash=b"h", synced_source={})
    plan = plan_page([row], "mirror", mapper)
    assert plan.changes == []
    assert [(f.key, f.op) for f in plan.rejected] == [("1", "removed")]


def test_delete_of_a_key_never_synced_is_dropped() -> None:
    plan = plan_changes([delete("9", seq=2)], {}, "mirror", MAPPER)
    assert plan.changes == []
    assert plan.dropped == [("9", 2)]


@pytest.mark.parametrize(
    ("mode", "op"),
    [("insert", "added"), ("update", "changed"), ("upsert", "changed"), ("mirror", "changed")],
)
def test_a_key_maybe_held_is_sent_in_the_op_the_mode_sends(mode: SyncMode, op: str) -> None:
    """A removal kept pending and then dropped (the sync left mirror mode) leaves the key
    maybe held: its next version goes out in whichever op the mode sends, never dropped."""
    row = replace(upsert("1", ALICE, seq=5), synced_hash=MAYBE_HELD)
    plan = plan_page([row], mode, MAPPER)
    assert ops(plan) == {"1": op}
    assert plan.dropped == []


def test_a_removal_of_a_key_maybe_held_is_sent_only_where_the_mode_removes() -> None:
    row = replace(delete("1", seq=5), synced_hash=MAYBE_HELD, synced_source=ALICE)
    assert ops(plan_page([row], "mirror", MAPPER)) == {"1": "removed"}
    for mode in ("insert", "update", "upsert"):
        assert plan_page([row], mode, MAPPER).dropped == [("1", 5)]


def _one_of_each() -> tuple[list[PendingRow], dict[str, SyncedRow]]:
    """Key a is new, b changed, c deleted after a sync, d unchanged."""
    pending = [
        upsert("a", {"id": "a"}, seq=1),
        upsert("b", {"id": "b", "email": "new"}, seq=2),
        delete("c", seq=3),
        upsert("d", {"id": "d"}, seq=4),
    ]
    before = {
        "b": synced("b", {"id": "b", "email": "old"}),
        "c": synced("c", {"id": "c"}),
        "d": synced("d", {"id": "d"}),
    }
    return pending, before


def _plan_mode(mode: SyncMode) -> tuple[dict[str, str], set[str]]:
    pending, before = _one_of_each()
    plan = plan_changes(pending, before, mode, MAPPER)
    return ops(plan), {key for key, _ in plan.dropped}


def test_insert_mode_sends_added_rows_only() -> None:
    assert _plan_mode("insert") == ({"a": "added"}, {"b", "c", "d"})


def test_update_mode_sends_changed_rows_only() -> None:
    assert _plan_mode("update") == ({"b": "changed"}, {"a", "c", "d"})


def test_upsert_mode_sends_added_and_changed_rows() -> None:
    assert _plan_mode("upsert") == ({"a": "added", "b": "changed"}, {"c", "d"})


def test_mirror_mode_also_sends_removed_rows() -> None:
    assert _plan_mode("mirror") == ({"a": "added", "b": "changed", "c": "removed"}, {"d"})


def test_full_resync_sends_unchanged_rows_as_changed() -> None:
    plan = plan_changes(
        [upsert("1", ALICE)], {"1": synced("1", ALICE)}, "upsert", MAPPER, full_resync=True
    )
    assert ops(plan) == {"1": "changed"}
    assert plan.dropped == []


def test_full_resync_still_sends_new_rows_as_added() -> None:
    plan = plan_changes([upsert("1", ALICE)], {}, "upsert", MAPPER, full_resync=True)
    assert ops(plan) == {"1": "added"}


def test_a_failing_template_rejects_that_row_and_plans_the_others() -> None:
    mapper = compile_mappings(
        SyncConfiguration.model_validate(
            {
                "mappings": [
                    {"type": "template", "to": "ratio", "template": "{{ n | divided_by: d }}"}
                ]
            }
        )
    )
    pending = [upsert("good", {"n": 6, "d": 3}, seq=1), upsert("bad", {"n": 1, "d": 0}, seq=2)]
    plan = plan_changes(pending, {}, "upsert", mapper)
    assert ops(plan) == {"good": "added"}
    assert plan.changes[0].data == {"ratio": "2"}
    [failure] = plan.rejected
    assert (failure.key, failure.seq, failure.op) == ("bad", 2, "added")
    assert "ratio" in failure.error and "divided_by" in failure.error


# --- properties ----------------------------------------------------------------------------

KEYS = st.sampled_from([str(i) for i in range(8)])
VALUES = st.sampled_from(["x", "y"])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[PendingRow], dict[str, SyncedRow], SyncMode]:
    keys = draw(st.lists(KEYS, unique=True))
    pending = [
        delete(key, seq)
        if draw(st.booleans())
        else upsert(key, {"id": key, "email": draw(VALUES)}, seq)
        for seq, key in enumerate(keys)
    ]
    before = {
        key: synced(key, {"id": key, "email": draw(VALUES)})
        for key in draw(st.lists(KEYS, unique=True))
    }
    mode = draw(st.sampled_from(list(MODE_OPS)))
    return pending, before, mode


@given(scenarios(), st.booleans())
def test_every_pending_row_is_planned_exactly_once(scenario: Any, full_resync: bool) -> None:
    pending, before, mode = scenario
    plan = plan_changes(pending, before, mode, MAPPER, full_resync=full_resync)
    accounted = [(c.key, c.seq) for c in plan.changes] + plan.dropped
    accounted += [(f.key, f.seq) for f in plan.rejected]
    assert sorted(accounted) == sorted((row.key, row.seq) for row in pending)


def expected_op(row: PendingRow, previous: SyncedRow | None) -> str | None:
    """The op a row needs, or None when nothing needs sending (unchanged, nothing to remove)."""
    if row.op == "delete":
        return None if previous is None else "removed"
    if previous is None:
        return "added"
    return "changed" if previous.row_hash != row.row_hash else None


@given(scenarios())
def test_rows_the_mode_sends_are_planned_and_all_others_dropped(scenario: Any) -> None:
    pending, before, mode = scenario
    plan = plan_changes(pending, before, mode, MAPPER)
    wanted = {row.key: expected_op(row, before.get(row.key)) for row in pending}
    sent = {key: op for key, op in wanted.items() if op in MODE_OPS[mode]}
    assert ops(plan) == sent
    assert {key for key, _ in plan.dropped} == set(wanted) - set(sent)
