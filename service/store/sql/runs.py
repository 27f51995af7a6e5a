"""Run records, run requests and pruning: the same statements for both dialects."""

from __future__ import annotations

from typing import Any

from service.core.models import SyncRun
from service.store.base import Lease, RunQuery
from service.store.sql.pages import IN_WORKSPACE

_RUN_ORDER = {
    "createdAt": "created_at",
    "startedAt": "started_at",
    "finishedAt": "finished_at",
    "id": "id",
}
#: Statuses of a run not yet over.
OPEN = "('queued', 'processing', 'reporting')"


def run_columns(run: SyncRun, lease: Lease | None) -> tuple[Any, ...]:
    """The columns of SAVE_RUN; times as epoch seconds."""
    return (
        int(run.id),
        run.sync_id,
        run.created_at.timestamp(),
        run.started_at.timestamp() if run.started_at else None,
        run.finished_at.timestamp() if run.finished_at else None,
        run.model_dump_json(),
        run.status.value,
        lease.owner if lease else None,
        lease.token if lease else None,
    )


#: A run saved without a lease keeps the one it was saved under before.
SAVE_RUN = (
    "INSERT INTO sync_runs (id, sync_id, created_at, started_at, finished_at, doc, status, "
    "lease_owner, lease_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "started_at = excluded.started_at, finished_at = excluded.finished_at, doc = excluded.doc, "
    "status = excluded.status, "
    "lease_owner = COALESCE(excluded.lease_owner, sync_runs.lease_owner), "
    "lease_token = COALESCE(excluded.lease_token, sync_runs.lease_token)"
)
RUN_LEASE = "SELECT lease_owner, lease_token FROM sync_runs WHERE id = ?"


def select_runs(query: RunQuery) -> tuple[str, list[Any]]:
    """One page of runs plus one row, to tell whether more follow."""
    sql = "SELECT doc FROM sync_runs WHERE sync_id = ?"
    params: list[Any] = [query.sync_id]
    if query.workspace_id is not None:
        sql += f" AND {IN_WORKSPACE}"
        params.append(query.workspace_id)
    if query.run_id is not None:
        sql += " AND id = ?"
        params.append(int(query.run_id))
    if query.after is not None:
        sql += " AND created_at > ?"
        params.append(query.after.timestamp())
    if query.before is not None:
        sql += " AND created_at < ?"
        params.append(query.before.timestamp())
    column = _RUN_ORDER.get(query.order_by, "created_at")
    direction = "ASC" if query.ascending else "DESC"
    nulls = "NULLS LAST" if column != "id" else ""
    sql += f" ORDER BY {column} {direction} {nulls}, id {direction} LIMIT ? OFFSET ?"
    params.extend([query.limit + 1, query.offset])
    return sql, params


#: Runs not over whose lease is no longer live: their holder is gone. A run never saved under
#: a lease counts only when created before `?` (SQLite: before this process opened the store).
ORPHANED_RUNS = f"""
SELECT r.id, r.doc FROM sync_runs r WHERE r.status IN {OPEN}
AND NOT EXISTS (
  SELECT 1 FROM sync_leases l WHERE l.sync_id = r.sync_id AND l.owner = r.lease_owner
  AND l.token = r.lease_token AND l.expires_at >= ?
)
AND (r.lease_owner IS NOT NULL OR r.created_at < ?)
ORDER BY r.id
"""
CLOSE_RUN = (
    f"UPDATE sync_runs SET status = ?, finished_at = ?, doc = ? WHERE id = ? AND status IN {OPEN}"
)

REQUEST = (
    "INSERT INTO run_requests (sync_id, kind, run_id, full_resync, created_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
#: Trigger requests a replica may take: of syncs whose lease is free, expired or its own.
TAKE_REQUESTS = """
DELETE FROM run_requests WHERE id IN (
  SELECT q.id FROM run_requests q WHERE q.kind = 'trigger' AND NOT EXISTS (
    SELECT 1 FROM sync_leases l WHERE l.sync_id = q.sync_id AND l.owner <> ? AND l.expires_at >= ?
  ) ORDER BY q.id LIMIT ?{skip_locked}
) RETURNING sync_id, run_id, full_resync, id
"""
CANCEL_REQUESTED = "SELECT 1 FROM run_requests WHERE kind = 'cancel' AND run_id = ? LIMIT 1"
FORGET_CANCEL = "DELETE FROM run_requests WHERE kind = 'cancel' AND run_id = ?"

PRUNE_OLD_RUNS = f"DELETE FROM sync_runs WHERE created_at < ? AND status NOT IN {OPEN}"
PRUNE_RUNS_BEYOND = f"""
DELETE FROM sync_runs WHERE id IN (
  SELECT id FROM (
    SELECT id, status, ROW_NUMBER() OVER (PARTITION BY sync_id ORDER BY created_at DESC, id DESC)
      AS n FROM sync_runs
  ) AS t WHERE t.n > ? AND t.status NOT IN {OPEN}
)
"""
PRUNE_REJECTED = "DELETE FROM rejected_rows WHERE created_at < ?"
#: A snapshot that never closed forgets its keys and counts as closed, so a closing message
#: arriving after all cannot plan removals from a partial key set.
ABANDONED_SNAPSHOTS = (
    "SELECT sync_id, snapshot_id FROM snapshots WHERE closed_at IS NULL AND opened_at < ?"
)
PRUNE_SNAPSHOTS = "DELETE FROM snapshots WHERE closed_at < ?"
PRUNE_REQUESTS = "DELETE FROM run_requests WHERE created_at < ?"
