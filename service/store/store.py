"""The store's one implementation: its logic written once over a Dialect (SQLite or
PostgreSQL), which supplies connections, locking and the hand-tuned hot statements."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from service.core.models import Model, RunStatus, Sync, SyncRun, SyncStatus
from service.core.rows import (
    PendingRow,
    PendingWrite,
    RejectedRow,
    RowOutcomes,
    SnapshotProgress,
    SyncedRow,
)
from service.store.base import (
    MAX_PAGE_BYTES,
    TABLES,
    CatalogItem,
    Conflict,
    Lease,
    LeaseLost,
    Retention,
    RunControl,
    RunQuery,
    Store,
    T,
)
from service.store.conn import Conn
from service.store.dialect import Dialect
from service.store.sql import catalog, ingest, leases, pages, runs, streamed

_INTERRUPTED = "the service stopped during the run"
#: Pruning may take this many store timeouts per transaction (a first prune of a big store).
_UPKEEP = 30


class SqlStore(Store):
    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect
        #: (table, id) of catalog items a read found unreadable.
        self._unreadable: set[tuple[str, str]] = set()

    # lifecycle -------------------------------------------------------------------------

    async def open(self, migrate: bool = True) -> None:
        """Connect; apply the migrations not yet recorded unless `migrate` is off (then the
        schema must be current already: see `schema_status`)."""
        await self._d.open(migrate)
        if self._d.alone and (self._d.schema_upto is None or self._d.schema_upto >= 8):
            # Whoever held a lease before this process is gone: its syncs may run at once.
            async with self._d.tx() as conn:
                await conn.execute(leases.EXPIRE_ALL)

    async def close(self) -> None:
        await self._d.close()

    async def schema_status(self) -> tuple[int, int]:
        """(the version the database holds, the version this release migrates to), read
        before `open`."""
        return await self._d.schema_version(), len(self._d.migrations())

    async def ping(self) -> bool:
        return await self._d.ping()

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        async with self._d.read() as conn:
            return await conn.fetch(sql, *params)

    # catalog ---------------------------------------------------------------------------

    async def catalog_version(self) -> int:
        rows = await self._rows(catalog.VERSION)
        return int(rows[0][0]) if rows else 0

    async def upsert(self, item: CatalogItem) -> None:
        async with self._d.tx() as conn:
            await self._write_item(conn, item)

    async def create(self, item: T) -> T:
        table = TABLES[type(item)]
        counter = f"ids:{table}"
        async with self._d.tx() as conn:
            # Creates of one kind queue here, and so do upserts into the table: no other
            # transaction can take the id picked below before this one commits.
            await self._d.lock_table(conn, table, "SHARE ROW EXCLUSIVE")
            top = await conn.fetchval(
                f"SELECT COALESCE(MAX(CAST(id AS {self._d.numeric})), 0) FROM {table}"
            )
            # The counter remembers ids of deleted items: none is ever given out again.
            used = await conn.fetchval("SELECT value FROM meta WHERE name = ?", counter)
            new_id = max(int(top), int(used or 0)) + 1
            await conn.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                counter,
                new_id,
            )
            created = item.model_copy(update={"id": str(new_id)})
            await self._write_item(conn, created)
        return created

    async def _write_item(self, conn: Conn, item: CatalogItem) -> None:
        try:
            await conn.execute(*_flat(catalog.upsert_item(item)))
        except Exception as exc:
            if not self._d.is_slug_conflict(exc):
                raise
            raise Conflict("slug", f"slug {item.slug!r} is already used in this workspace") from exc
        if isinstance(item, Sync):
            await conn.execute(catalog.SYNC_STATUS_AFTER_WRITE, item.disabled, item.id)
        await conn.execute(catalog.BUMP_VERSION)

    async def get(self, kind: type[T], item_id: str, workspace_id: str | None = None) -> T | None:
        sql, params = catalog.select_items(kind, workspace_id)
        rows = await self._rows(sql + " AND id = ?", *params, item_id)
        items = await self._readable(kind, rows)
        return items[0] if items else None

    async def list(self, kind: type[T], workspace_id: str | None = None) -> list[T]:
        items, _ = await self.list_page(kind, workspace_id)
        return items

    async def list_page(
        self,
        kind: type[T],
        workspace_id: str | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        filters: dict[str, str] | None = None,
        order_by: str = "id",
        last_run_after: datetime | None = None,
        last_run_before: datetime | None = None,
    ) -> tuple[list[T], bool]:
        sql, params = catalog.select_items(kind, workspace_id)
        for column, value in (filters or {}).items():
            if column == "name":
                sql += f" AND {self._d.doc_field.format(field='name')} = ?"
            elif column in {"slug", "model_id", "destination_id", "source_id"}:
                sql += f" AND {column} = ?"
            else:
                raise ValueError(f"cannot filter on {column!r}")
            params.append(value)
        for bound, op in ((last_run_after, ">"), (last_run_before, "<")):
            if bound is not None:
                if kind is not Sync:
                    raise ValueError("only syncs have a last run")
                sql += f" AND last_run_at {op} ?"
                params.append(self._d.timestamp(bound.astimezone(UTC)))
        sql += f" ORDER BY {self._order(kind, order_by)}CAST(id AS {self._d.numeric})"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend([limit + 1, offset])
        rows = await self._rows(sql, *params)
        more = limit is not None and len(rows) > limit
        return await self._readable(kind, rows[:limit] if more else rows), more

    def _order(self, kind: type[CatalogItem], order_by: str) -> str:
        """The ORDER BY terms before the numeric id that breaks ties."""
        if order_by == "id":
            return ""
        if order_by == "slug":
            return f"slug{self._d.text_order}, "
        if order_by == "lastRunAt" and kind is Sync:
            # Never run first, as if it ran at the beginning of time.
            return "CASE WHEN last_run_at IS NULL THEN 0 ELSE 1 END, last_run_at, "
        if order_by in {"name", "createdAt", "updatedAt"}:
            return f"{self._d.doc_field.format(field=order_by)}{self._d.text_order}, "
        raise ValueError(f"cannot order by {order_by!r}")

    async def _readable(self, kind: type[T], rows: Sequence[Any]) -> list[T]:
        """The items of the rows. One whose document can't be read is left out and
        remembered; a sync of that kind is marked failed, so its state says it can't run."""
        table = TABLES[kind]
        items: list[T] = []
        broken: list[str] = []
        for row in rows:
            item = catalog.item_from_row(kind, row)
            key = (table, str(row[0]))
            if item is None:
                broken.append(str(row[0]))
                self._unreadable.add(key)
            else:
                self._unreadable.discard(key)
                items.append(item)
        if broken and kind is Sync:
            async with self._d.tx() as conn:
                for sync_id in broken:
                    await conn.execute(catalog.MARK_UNREADABLE_FAILED, sync_id)
        return items

    def unreadable(self) -> int:
        return len(self._unreadable)

    async def users_of(
        self, kind: type[CatalogItem], workspace_id: str, ids: Sequence[str]
    ) -> dict[str, list[str]]:
        if not ids:
            return {}
        column = "model_id" if kind is Model else "destination_id"
        marks = ", ".join("?" * len(ids))
        rows = await self._rows(
            f"SELECT {column}, id FROM syncs WHERE workspace_id = ? AND {column} IN ({marks}) "
            f"ORDER BY CAST(id AS {self._d.numeric})",
            workspace_id,
            *ids,
        )
        found: dict[str, list[str]] = {}
        for used, sync_id in rows:
            found.setdefault(str(used), []).append(str(sync_id))
        return found

    async def delete(self, kind: type[CatalogItem], item_id: str, workspace_id: str) -> bool:
        table = TABLES[kind]
        check = catalog.REFERENCE_CHECKS.get(kind)
        async with self._d.tx() as conn:
            if check is not None:
                # Nobody may add a reference between the check below and the delete.
                await self._d.lock_table(conn, check[0], "SHARE")
            exists = await conn.fetchval(
                f"SELECT 1 FROM {table} WHERE id = ? AND workspace_id = ?", item_id, workspace_id
            )
            if exists is None:
                return False  # another workspace's item is not even there to conflict
            if check is not None:
                _, query, field, what = check
                used = await conn.fetchval(query, item_id)
                if used is not None:
                    raise Conflict(field, f"{what} {used} still uses it")
            await conn.execute(
                f"DELETE FROM {table} WHERE id = ? AND workspace_id = ?", item_id, workspace_id
            )
            if kind is Sync:
                for child in catalog.SYNC_CHILDREN:
                    await conn.execute(f"DELETE FROM {child} WHERE sync_id = ?", item_id)
            await conn.execute(catalog.BUMP_VERSION)
        self._unreadable.discard((table, item_id))
        return True

    async def set_sync_status(
        self, sync_id: str, status: SyncStatus, last_run_at: datetime | None = None
    ) -> None:
        async with self._d.tx() as conn:
            if last_run_at is None:
                await conn.execute("UPDATE syncs SET status = ? WHERE id = ?", str(status), sync_id)
            else:
                await conn.execute(
                    "UPDATE syncs SET status = ?, last_run_at = ? WHERE id = ?",
                    str(status),
                    self._d.timestamp(last_run_at),
                    sync_id,
                )

    # ingest ----------------------------------------------------------------------------

    async def write_pending(
        self, rows: Sequence[PendingWrite], snapshot: SnapshotProgress | None = None
    ) -> int:
        if not rows and not snapshot:
            return 0
        kept = 0
        async with self._d.tx() as conn:
            if rows:
                kept = await self._d.ingest.write_versions(conn, rows)
            if snapshot:
                await self._snapshot(conn, snapshot)
        return kept

    async def _snapshot(self, conn: Conn, snapshot: SnapshotProgress) -> None:
        now = time.time()
        if snapshot.rejected:
            await conn.executemany(
                ingest.STORE_REJECTED,
                [(r.sync_id, r.reason, r.data, now) for r in snapshot.rejected],
            )
        done = set()
        for pair in snapshot.snapshots():
            if await conn.fetchval(ingest.IS_CLOSED, *pair):
                done.add(pair)
        snapshot = snapshot.without(done)
        opened = snapshot.snapshots()
        if opened:
            await conn.executemany(ingest.OPEN_SNAPSHOT, [(s, n, now) for s, n in sorted(opened)])
        if snapshot.keys:
            await self._d.ingest.snapshot_keys(conn, snapshot.keys)
        for sync_id in dict.fromkeys(snapshot.truncated):
            await self._plan_removals(conn, sync_id, ingest.HELD_KEYS)
        for sync_id, snap in snapshot.closed:
            await self._plan_removals(conn, sync_id, ingest.ABSENT_FROM_SNAPSHOT, snap)
            await conn.execute(ingest.FORGET_SNAPSHOT_KEYS, sync_id, snap)
            await conn.execute(ingest.CLOSE_SNAPSHOT, now, sync_id, snap)

    async def _plan_removals(self, conn: Conn, sync_id: str, pages: str, *args: Any) -> None:
        """Plans as removed the keys the query `pages` finds, page by page after the last key
        of the page before (a huge sync's keys never sit in memory at once): those absent from
        a closed snapshot, or every key of a truncated table. If it planned any, the sync's
        epoch grows with them, in the same transaction."""
        after = ""
        planned = False
        while True:
            page = await conn.fetch(pages, sync_id, after, *args, ingest.ABSENT_PAGE)
            if not page:
                break
            keys = [r[0] for r in page]
            await self._d.ingest.plan_deletes(conn, sync_id, keys)
            after = keys[-1]
            planned = True
        if planned:
            await conn.execute(ingest.BUMP_EPOCH, sync_id)

    async def open_snapshots(self) -> list[tuple[str, str, float]]:
        return [(r[0], r[1], r[2]) for r in await self._rows(ingest.OPEN_SNAPSHOTS)]

    async def claim_rejected(self, sync_id: str, run_id: str) -> int:
        async with self._d.tx() as conn:
            return await conn.execute(ingest.CLAIM_REJECTED, run_id, sync_id)

    async def list_rejected(
        self, sync_id: str, *, limit: int, offset: int, workspace_id: str | None = None
    ) -> tuple[list[RejectedRow], bool]:
        rows = await self._rows(
            ingest.LIST_REJECTED, sync_id, workspace_id, workspace_id, limit + 1, offset
        )
        return [RejectedRow(*r) for r in rows[:limit]], len(rows) > limit

    async def requeue_synced(self, sync_id: str) -> int:
        async with self._d.tx() as conn:
            return await self._d.ingest.requeue(conn, sync_id)

    # pages -----------------------------------------------------------------------------

    async def pending_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._rows(pages.PENDING_COUNTS)}

    async def failed_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._rows(pages.FAILED_COUNTS)}

    async def list_pending(
        self,
        sync_id: str,
        *,
        failed_only: bool,
        limit: int,
        offset: int,
        workspace_id: str | None = None,
    ) -> tuple[list[PendingRow], bool]:
        rest, params = pages.select_pending(sync_id, failed_only, limit, offset, workspace_id)
        async with self._d.read() as conn:
            rows = await self._d.pages.pending(conn, pages.LISTED_FIELDS, rest, params)
        return rows[:limit], len(rows) > limit

    async def max_pending_seq(self, sync_id: str) -> int:
        rows = await self._rows(pages.MAX_PENDING_SEQ, sync_id)
        return int(rows[0][0])

    async def pending_page(
        self,
        sync_id: str,
        after_seq: int,
        upto_seq: int,
        limit: int,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> list[PendingRow]:
        params = pages.page_params(sync_id, after_seq, upto_seq, limit, max_bytes)
        async with self._d.read() as conn:
            return await self._d.pages.pending(conn, pages.PAGE_FIELDS, pages.PENDING_PAGE, params)

    async def synced_rows(self, sync_id: str, keys: Sequence[str]) -> dict[str, SyncedRow]:
        if not keys:
            return {}
        found = await self._rows(self._d.pages.SYNCED, sync_id, self._d.pages.keys(keys))
        return pages.synced_rows(found)

    # outcomes --------------------------------------------------------------------------

    async def record_outcomes(
        self, sync_id: str, outcomes: RowOutcomes, now: float, lease: Lease | None = None
    ) -> None:
        if not outcomes:
            return
        async with self._d.tx() as conn:
            if lease is not None:
                await self._fence(conn, lease)
            await self._d.outcomes.record(conn, sync_id, outcomes, now)

    async def _fence(self, conn: Conn, lease: Lease) -> None:
        held = await conn.fetchval(
            leases.HOLDS.format(for_share=self._d.for_share),
            lease.sync_id,
            lease.owner,
            lease.token,
        )
        if held is None:
            raise LeaseLost(f"the lease of sync {lease.sync_id} now belongs to another holder")

    # streamed rows ---------------------------------------------------------------------

    async def held(self, sync_id: str, keys: Sequence[str]) -> dict[str, tuple[bytes | None, bool]]:
        if not keys:
            return {}
        async with self._d.read() as conn:
            return await self._d.streamed.held(conn, sync_id, keys)

    async def settled_page(
        self, sync_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes | None]]:
        async with self._d.read() as conn:
            return await self._d.streamed.settled_page(conn, sync_id, after, limit)

    async def record_streamed(
        self,
        sync_id: str,
        delivered: Sequence[PendingWrite],
        failed: Sequence[tuple[PendingWrite, str | None]],
        now: float,
    ) -> list[str]:
        streamed.check_streamed(sync_id, delivered, failed)
        if not delivered and not failed:
            return []
        # Delivered rows alone (the usual case) are one statement, atomic without a transaction.
        async with self._d.tx() if failed and delivered else self._d.write_one() as conn:
            return await self._d.streamed.record(conn, sync_id, delivered, failed, now)

    async def pending_among(self, sync_id: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        async with self._d.read() as conn:
            return await self._d.streamed.pending_among(conn, sync_id, keys)

    async def syncs_with_pending(self, sync_ids: Sequence[str]) -> set[str]:
        if not sync_ids:
            return set()
        async with self._d.read() as conn:
            return await self._d.streamed.syncs_with_pending(conn, sync_ids)

    async def sync_epochs(self, sync_ids: Sequence[str]) -> dict[str, int]:
        if not sync_ids:
            return {}
        async with self._d.read() as conn:
            return await self._d.streamed.sync_epochs(conn, sync_ids)

    # leases ----------------------------------------------------------------------------

    async def acquire_lease(self, sync_id: str, owner: str, seconds: float) -> int | None:
        now = time.time()
        async with self._d.tx() as conn:
            token = await conn.fetchval(leases.ACQUIRE, sync_id, owner, now + seconds, now)
        return None if token is None else int(token)

    async def renew_lease(self, sync_id: str, owner: str, token: int, seconds: float) -> bool:
        async with self._d.tx() as conn:
            return (
                await conn.execute(leases.RENEW, time.time() + seconds, sync_id, owner, token) > 0
            )

    async def release_lease(self, sync_id: str, owner: str, token: int | None = None) -> None:
        async with self._d.tx() as conn:
            if token is None:
                await conn.execute(leases.RELEASE, sync_id, owner)
            else:
                await conn.execute(leases.RELEASE_TOKEN, sync_id, owner, token)

    # runs ------------------------------------------------------------------------------

    async def next_run_id(self) -> str:
        async with self._d.tx() as conn:
            return str(await self._d.next_run_id(conn))

    async def save_run(self, run: SyncRun, lease: Lease | None = None) -> None:
        async with self._d.tx() as conn:
            bound = lease
            if bound is None:  # bound to the lease it was saved under before, if any
                found = await conn.fetch(runs.RUN_LEASE, int(run.id))
                if found and found[0][0] is not None:
                    bound = Lease(run.sync_id, found[0][0], int(found[0][1]))
            if bound is not None:
                await self._fence(conn, bound)
            await conn.execute(runs.SAVE_RUN, *runs.run_columns(run, lease))
            if run.status.is_final:
                await conn.execute(runs.FORGET_CANCEL, run.id)

    async def list_runs(self, query: RunQuery) -> tuple[list[SyncRun], bool]:
        rows = await self._rows(*_flat(runs.select_runs(query)))
        found = [SyncRun.model_validate_json(r[0]) for r in rows[: query.limit]]
        return found, len(rows) > query.limit

    async def close_orphaned_runs(self) -> list[SyncRun]:
        now = datetime.now(UTC)
        closed = []
        async with self._d.tx() as conn:
            found = await conn.fetch(runs.ORPHANED_RUNS, time.time(), self._d.orphan_cutoff)
            for _, doc in found:
                run = SyncRun.model_validate_json(doc)
                run.status = RunStatus.INTERRUPTED
                run.finished_at = now
                run.error = run.error or _INTERRUPTED
                changed = await conn.execute(
                    runs.CLOSE_RUN,
                    run.status.value,
                    now.timestamp(),
                    run.model_dump_json(),
                    int(run.id),
                )
                if changed:
                    closed.append(run)
        return closed

    # run control -----------------------------------------------------------------------

    async def request_run(self, sync_id: str, run_id: str | None, full_resync: bool) -> None:
        async with self._d.tx() as conn:
            await conn.execute(
                runs.REQUEST, sync_id, "trigger", run_id, int(full_resync), time.time()
            )

    async def take_run_requests(self, owner: str, limit: int = 100) -> list[RunControl]:
        sql = runs.TAKE_REQUESTS.format(skip_locked=self._d.skip_locked)
        async with self._d.tx() as conn:
            rows = await conn.fetch(sql, owner, time.time(), limit)
        rows = sorted(rows, key=lambda r: r[3])
        return [RunControl(r[0], r[1], bool(r[2])) for r in rows]

    async def request_cancel(self, sync_id: str, run_id: str) -> None:
        async with self._d.tx() as conn:
            await conn.execute(runs.REQUEST, sync_id, "cancel", run_id, 0, time.time())

    async def cancel_requested(self, run_id: str) -> bool:
        return bool(await self._rows(runs.CANCEL_REQUESTED, run_id))

    # upkeep ----------------------------------------------------------------------------

    async def prune(
        self, retention: Retention | None = None, now: float | None = None
    ) -> dict[str, int]:
        keep = retention or Retention()
        now = time.time() if now is None else now
        counts = {"runs": 0, "rejected": 0, "snapshotKeys": 0, "snapshots": 0, "requests": 0}
        async with self._d.tx() as conn:
            await self._d.allow_long(conn, _UPKEEP)
            counts["runs"] += await conn.execute(runs.PRUNE_OLD_RUNS, now - keep.runs_seconds)
            counts["runs"] += await conn.execute(runs.PRUNE_RUNS_BEYOND, keep.runs_per_sync)
            counts["rejected"] = await conn.execute(
                runs.PRUNE_REJECTED, now - keep.rejected_seconds
            )
            counts["requests"] = await conn.execute(
                runs.PRUNE_REQUESTS, now - keep.requests_seconds
            )
        abandoned = await self._rows(runs.ABANDONED_SNAPSHOTS, now - keep.open_snapshot_seconds)
        for sync_id, snap in abandoned:  # one transaction each: a snapshot may hold many keys
            async with self._d.tx() as conn:
                await self._d.allow_long(conn, _UPKEEP)
                counts["snapshotKeys"] += await conn.execute(
                    ingest.FORGET_SNAPSHOT_KEYS, sync_id, snap
                )
                await conn.execute(ingest.CLOSE_SNAPSHOT, now, sync_id, snap)
        async with self._d.tx() as conn:
            await self._d.allow_long(conn, _UPKEEP)
            counts["snapshots"] = await conn.execute(
                runs.PRUNE_SNAPSHOTS, now - keep.closed_snapshot_seconds
            )
        return counts


def _flat(statement: tuple[str, list[Any]]) -> list[Any]:
    return [statement[0], *statement[1]]
