"""plan_changes: pending rows against what the destination holds -> send, drop or reject."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.core.models import SyncMode
from service.core.rows import MAYBE_HELD, ChangeOp, PendingRow, RowChange, RowFailure
from service.runner.mapping import MappingError, RowMapper

MODE_OPS: dict[SyncMode, frozenset[ChangeOp]] = {
    "insert": frozenset({"added"}),
    "update": frozenset({"changed"}),
    "upsert": frozenset({"added", "changed"}),
    "mirror": frozenset({"added", "changed", "removed"}),
}


@dataclass(slots=True)
class Plan:
    changes: list[RowChange] = field(default_factory=list)
    #: (key, seq) of rows that need no send: unchanged, nothing to remove, or outside the mode.
    dropped: list[tuple[str, int]] = field(default_factory=list)
    rejected: list[RowFailure] = field(default_factory=list)


def plan_changes(
    pending: list[PendingRow],
    mode: SyncMode,
    mapper: RowMapper,
    *,
    full_resync: bool = False,
) -> Plan:
    """Classify each pending row as added, changed or removed against what the destination
    holds for its key (the page's `synced_hash`).

    A row whose source-column hash equals the one last sent is unchanged and dropped. Rows the
    mode does not send are dropped too, leaving what the destination holds on record as it was.
    Where the destination may hold a version or none (`MAYBE_HELD`), an upsert goes out in
    whichever of the two ops the mode sends.
    With `full_resync`, unchanged rows are sent too (as changed). A removal sends the key's last
    upsert, mapped again from its source columns.
    """
    allowed = MODE_OPS[mode]
    plan = Plan()
    changes, dropped = plan.changes, plan.dropped
    for row in pending:
        held = row.synced_hash
        if row.op == "delete":
            if held is None or "removed" not in allowed:
                dropped.append((row.key, row.seq))
                continue
            try:
                data = mapper(row.synced_source or {})
            except MappingError as exc:
                plan.rejected.append(RowFailure(row.key, row.seq, "removed", str(exc)))
                continue
            changes.append(RowChange("removed", row.key, data, row.seq, None, row.emitted_at))
            continue
        if held is None:
            op: ChangeOp = "added"
        elif held == MAYBE_HELD:
            # A removal was meant for the key and not known to be done: the destination may
            # hold a version or none. Changed where the mode sends changes, else added (an
            # insert-only sync then sends it rather than leave the destination without it).
            op = "changed" if "changed" in allowed else "added"
        elif held != row.row_hash or full_resync:
            op = "changed"  # a full resync sends unchanged rows too; the mode still applies
        else:
            dropped.append((row.key, row.seq))
            continue
        if op not in allowed:
            dropped.append((row.key, row.seq))
            continue
        try:
            data = mapper(row.data or {})
        except MappingError as exc:
            plan.rejected.append(RowFailure(row.key, row.seq, op, str(exc)))
            continue
        changes.append(RowChange(op, row.key, data, row.seq, row.row_hash, row.emitted_at))
    return plan
