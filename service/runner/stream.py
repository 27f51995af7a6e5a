"""Streams: rows of continuous syncs sent from memory on the replica that consumed them, and
written once, as their outcome.

The store's pending rows are the overflow: rows of scheduled syncs, rows of a sync whose
memory queue is over its byte budget, rows that failed and wait for a retry, deletes of keys
the destination holds, and rows of syncs with a snapshot in progress. The lease-holding runner
sends those as before. For the rest, per sync and per replica (a key's versions come from one
partition, so one replica):

- a key is streamed only while the replica knows of no pending version of it in the store
  (`_SyncStream.overflow`), and a pending version is written only when no streamed version of
  the key is in flight here (`Streams.take` waits for it), so the two paths never hold
  versions of one key at once;
- what the destination holds is looked up in a bounded cache of synced hashes
  (`SyncedCache`), filled by one store read per batch for the keys it lacks; a row equal to it
  is dropped with no write at all;
- a consumed batch's offsets may be committed once its `StreamTicket` is done: each of its
  streamed rows recorded, dropped, superseded by a newer version, or spilled to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from service.core.errors import DestinationError
from service.core.interfaces import Clock
from service.core.metrics import Metrics
from service.core.models import ContinuousSchedule, RunStatus, Sync, SyncRun
from service.core.rows import (
    MAYBE_HELD,
    PendingRow,
    PendingWrite,
    RowChange,
    RowFailure,
    RowOutcomes,
)
from service.runner.mapping import renders_templates, unchanged_over
from service.runner.planner import MODE_OPS, plan_changes
from service.runner.runner import RunAborted, Sending, Sent, SyncRunner, plan_in_thread
from service.store.base import Store

log = logging.getLogger(__name__)

#: A streamed run ends after this long without rows (the runner's continuous runs do the same),
#: or once it has been open `STREAM_RUN_SECONDS`, so each run record covers a bounded stretch.
STREAM_IDLE_SECONDS = 1.0
STREAM_RUN_SECONDS = 60.0
#: Keys known pending per sync before the whole sync goes to the store until it has none.
MAX_OVERFLOW_KEYS = 10_000
#: How often keys known pending are looked up again, to stream them once they are sent.
OVERFLOW_CHECK_SECONDS = 1.0
#: The consumer waits for room in a full queue while its sender makes progress (Kafka keeps the
#: backlog); once no batch of the sync was recorded for `STALL_SECONDS`, or after
#: `ROOM_WAIT_SECONDS` in all, the sync's rows go to the store instead, so one slow destination
#: does not hold back every other sync of the consumer.
STALL_SECONDS = 2.0
ROOM_WAIT_SECONDS = 30.0
#: While a snapshot waits for a sync's memory to empty, how often it looks again without news.
QUIET_CHECK_SECONDS = 1.0
#: A key the cache has no entry for (None is an entry: the destination holds no version).
_UNKNOWN: Any = object()
#: Rough bytes of one cache entry beyond its key (dict slot, hash bytes object).
_ENTRY_BYTES = 120
#: Keys a page of the cache's warm-up reads (`Streams._warm`): a few milliseconds of the store's
#: reading connection and of the event loop each.
WARM_PAGE_KEYS = 20_000
#: How long a replica that starts waits for the warm-up before it joins the consumer group
#: (`Streams.warmed`): a full cache is read in about a second; past this, it joins and the
#: warm-up goes on beside the first fetches.
WARM_BEFORE_JOIN_SECONDS = 10.0


class SyncedCache:
    """What the destination holds per (sync, key) as this replica knows it: the synced hash, or
    None for a key it does not hold. Bounded by bytes; each sync's oldest entries go first.
    Each sync's `mark` changes whenever entries of it are dropped (forgotten or evicted), so a
    reader of the store can tell whether what it read may be older than what was dropped."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._syncs: dict[str, dict[str, bytes | None]] = {}
        self._marks: dict[str, int] = {}
        self._cleared = 0
        self.bytes = 0

    def get(self, sync_id: str) -> dict[str, bytes | None]:
        return self._syncs.setdefault(sync_id, {})

    def put(self, sync_id: str, items: Iterable[tuple[str, bytes | None]]) -> None:
        entries = self.get(sync_id)
        added = 0
        for key, value in items:
            if key not in entries:
                added += len(key) + _ENTRY_BYTES
            entries[key] = value
        self.bytes += added
        if self.bytes > self.max_bytes:
            self._evict(sync_id)

    def mark(self, sync_id: str) -> tuple[int, int]:
        return self._cleared, self._marks.get(sync_id, 0)

    def fill(self, sync_id: str, items: Iterable[tuple[str, bytes | None]]) -> bool:
        """Adds entries for keys it has none of (an entry it has is as new or newer), up to
        three quarters of its bytes, evicting nothing; False once that is reached."""
        entries = self.get(sync_id)
        room = self.max_bytes * 3 // 4
        added = 0
        for key, value in items:
            if key in entries:
                continue
            size = len(key) + _ENTRY_BYTES
            if self.bytes + added + size > room:
                self.bytes += added
                return False
            entries[key] = value
            added += size
        self.bytes += added
        return True

    def _dropped(self, sync_id: str) -> None:
        self._marks[sync_id] = self._marks.get(sync_id, 0) + 1

    def _evict(self, sync_id: str) -> None:
        target = self.max_bytes * 3 // 4
        victims = self._syncs[sync_id]
        if not victims:
            sync_id, victims = next(iter(self._syncs.items()))
        self._dropped(sync_id)
        freed = 0
        drop = []
        for key in victims:
            if self.bytes - freed <= target:
                break
            drop.append(key)
            freed += len(key) + _ENTRY_BYTES
        for key in drop:
            del victims[key]
        self.bytes -= freed

    def forget(self, sync_id: str, keys: Iterable[str] | None = None) -> None:
        self._dropped(sync_id)
        entries = self._syncs.get(sync_id)
        if not entries:
            return
        if keys is None:
            self.bytes -= sum(len(k) + _ENTRY_BYTES for k in entries)
            del self._syncs[sync_id]
            return
        for key in keys:
            if entries.pop(key, False) is not False:
                self.bytes -= len(key) + _ENTRY_BYTES

    def clear(self) -> None:
        self._syncs.clear()
        self._cleared += 1
        self.bytes = 0


class StreamTicket:
    """The streamed rows of one consumed batch. `done` resolves once none is left in memory
    (each recorded, dropped, superseded or spilled); it fails when the service stopped with
    some of them neither sent nor spilled."""

    __slots__ = ("_left", "_sealed", "done")

    def __init__(self) -> None:
        self._left = 0
        self._sealed = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, n: int = 1) -> None:
        self._left += n

    def release(self, n: int = 1) -> None:
        self._left -= n
        if self._left <= 0 and self._sealed and not self.done.done():
            self.done.set_result(None)

    def seal(self) -> None:
        self._sealed = True
        self.release(0)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()  # retrieved here: the committer may never look at it


@dataclass(slots=True)
class _Queued(PendingRow):
    """A row waiting in memory, planned as it is (`synced_hash`: what the destination holds
    for the key as far as this replica knows)."""

    write: PendingWrite | None = None
    ticket: StreamTicket | None = None
    size: int = 0


#: A version to queue: (the write, what the destination holds, the source columns a removal
#: sends or None for an upsert).
_Version = tuple[PendingWrite, "bytes | None", "dict[str, Any] | None"]


@dataclass(slots=True)
class _SyncStream:
    sync: Sync
    queue: dict[str, _Queued] = field(default_factory=dict)
    queued_bytes: int = 0
    #: Rows of a batch in flight, by key.
    flying: dict[str, _Queued] = field(default_factory=dict)
    #: Keys with a pending version in the store: their rows go there too.
    overflow: set[str] = field(default_factory=set)
    #: Every row of the sync goes to the store until it has no pending row.
    overflow_all: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set when the sender takes rows from the queue.
    room: asyncio.Event = field(default_factory=asyncio.Event)
    #: When a batch of the sync was last recorded (monotonic seconds).
    progress_at: float = 0.0
    #: Set whenever rows in flight are recorded or stored.
    landed: asyncio.Event = field(default_factory=asyncio.Event)
    pump: asyncio.Task[None] | None = None
    run: SyncRun | None = None
    sending: Sending | None = None
    #: Set while a flush holds the pump (rebalance, shutdown).
    held_back: bool = False
    #: The destination's type, a metric label.
    kind: str = ""
    #: Batches of the open run were cancelled (by a flush) before they were recorded.
    cut: bool = False
    #: Rows failed since the last batch the destination took.
    failing: bool = False
    #: Outcome records under way (`Streams._record`): each runs to its end, and a spill waits.
    recording: set[asyncio.Future[None]] = field(default_factory=set)

    def enqueue(self, rows: list[_Version], ticket: StreamTicket) -> None:
        """Queues versions of rows (each after `supersede`), in order: (the version, what the
        destination holds, None for an upsert or the source columns of a removal)."""
        queue = self.queue
        added = 0
        for w, held, removed in rows:
            source = w.source
            # Bytes the queued row holds, roughly: its JSON, the decoded row it came from (a
            # dict slot and a value object per column, the values' text) and the records
            # around it. Measured at about 1.65 KiB for a row of ten columns and 264 bytes of
            # JSON.
            size = 2 * len(w.data or b"") + 80 * len(source or ()) + 300 + len(w.key)
            if removed is None:
                entry = _Queued(
                    w.key, 0, "upsert", source, w.row_hash, w.emitted_at, 0, None, None, held,
                    None, w, ticket, size,
                )  # fmt: skip
            else:
                entry = _Queued(
                    w.key, 0, "delete", None, None, w.emitted_at, 0, None, None, held, removed,
                    w, ticket, size,
                )  # fmt: skip
            queue[w.key] = entry
            added += size
        self.queued_bytes += added
        ticket.add(len(rows))

    def supersede(self, key: str, *, release: bool = True) -> _Queued | None:
        """Drops the queued version of `key`, if any (a newer version replaces it, or none
        needs sending): its ticket has nothing left to wait for. Without `release`, the
        caller releases it once the version is stored."""
        older = self.queue.pop(key, None)
        if older is not None:
            self.queued_bytes -= older.size
            if release:
                older.ticket.release()
        return older


class StreamStopped(Exception):
    """The service stopped before these rows were sent or spilled; they are read again."""


class Streams:
    """Per replica: the memory queues of continuous syncs, their senders and their cache."""

    def __init__(
        self,
        store: Store,
        runner: SyncRunner,
        metrics: Metrics,
        clock: Clock,
        *,
        notify_pending: Callable[[Iterable[str]], None],
        retry_failed: Callable[..., None] | None = None,
        queue_bytes: int = 8 << 20,
        cache_bytes: int = 64 << 20,
        record_retry: float = 0.5,
    ) -> None:
        self._store = store
        self._runner = runner
        self._metrics = metrics
        self._clock = clock
        self._notify_pending = notify_pending
        #: (sync_ids, now=False): failed rows wait for a retry run, sooner once the
        #: destination answers again.
        self._retry_failed = retry_failed or (lambda sync_ids, now=False: notify_pending(sync_ids))
        self.queue_bytes = queue_bytes
        self.cache = SyncedCache(cache_bytes)
        self._record_retry = record_retry
        self._streams: dict[str, _SyncStream] = {}
        #: Each sync's epoch when its cache was last checked (a store other replicas write).
        self._epochs: dict[str, int] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._warming: dict[str, asyncio.Task[None]] = {}
        self._checker: asyncio.Task[None] | None = None
        self.stopping = False

    @property
    def warming(self) -> bool:
        """Whether a warm-up of the cache is still reading the store (`_warm`)."""
        return bool(self._warming)

    async def warmed(self, seconds: float, stopping: asyncio.Event | None = None) -> bool:
        """Waits up to `seconds` (or until `stopping` is set) for the warm-ups under way to
        end; whether they did. The service waits before it joins the consumer group: the
        first fetches then find what the destination holds in the cache, and the warm-up
        does not share the event loop with them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        stop = asyncio.ensure_future(stopping.wait()) if stopping is not None else None
        try:
            while self._warming and (stop is None or not stop.done()):
                left = deadline - loop.time()
                if left <= 0:
                    break
                waits: set[asyncio.Future[Any]] = set(self._warming.values())
                if stop is not None:
                    waits.add(stop)
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if stop is not None:
                stop.cancel()
        return not self._warming

    # the catalog -----------------------------------------------------------------------

    def set_syncs(self, syncs: Iterable[Sync]) -> None:
        """Continuous, enabled syncs stream. What a sync that stops being one (disabled, or
        scheduled otherwise) holds in memory becomes pending in the store, where its runs find
        it; what a deleted sync holds is dropped."""
        syncs = list(syncs)
        wanted = {
            s.id: s for s in syncs if not s.disabled and isinstance(s.schedule, ContinuousSchedule)
        }
        known = {s.id for s in syncs}
        for sync_id, stream in list(self._streams.items()):
            sync = wanted.get(sync_id)
            if sync is None:
                del self._streams[sync_id]
                self.cache.forget(sync_id)
                warming = self._warming.pop(sync_id, None)
                if warming is not None:
                    warming.cancel()
                self._epochs.pop(sync_id, None)
                task = asyncio.create_task(self._retire(stream, keep=sync_id in known))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
                continue
            if sync.updated_at != stream.sync.updated_at:
                self.cache.forget(sync_id)  # a new mapping or mode: look again
            stream.sync = sync
        for sync_id, sync in wanted.items():
            if sync_id not in self._streams:
                self._streams[sync_id] = _SyncStream(sync)
                if not self._store.shared:
                    self._warming[sync_id] = asyncio.create_task(
                        self._warm(sync_id), name=f"stream-warm-{sync_id}"
                    )

    async def _warm(self, sync_id: str) -> None:
        """Fills the cache with what the store says the destination holds for the sync's
        settled keys, a page at a time, until the cache is three quarters full: after a
        restart, the rows that come again unchanged are dropped without a read each. Only
        for a store this replica alone writes (a shared one's other writers would not drop
        entries here). A page read while entries of the sync were dropped (a key went to the
        store, a snapshot closed) may be older than what dropped them: it is not used, and
        the warm-up ends there."""
        after = ""
        try:
            while True:
                mark = self.cache.mark(sync_id)
                page = await self._store.settled_page(sync_id, after, WARM_PAGE_KEYS)
                stream = self._streams.get(sync_id)
                if (
                    not page
                    or stream is None
                    or stream.overflow_all
                    or self.cache.mark(sync_id) != mark
                ):
                    return
                overflow = stream.overflow
                settled = [item for item in page if item[0] not in overflow] if overflow else page
                if not self.cache.fill(sync_id, settled) or len(page) < WARM_PAGE_KEYS:
                    return
                after = page[-1][0]
        except Exception as exc:
            log.debug("sync %s: the cache was not warmed: %s", sync_id, exc)
        finally:
            if self._warming.get(sync_id) is asyncio.current_task():
                del self._warming[sync_id]

    async def _retire(self, stream: _SyncStream, *, keep: bool) -> None:
        if stream.pump is not None and not stream.pump.done():
            stream.pump.cancel()
            await asyncio.wait({stream.pump})
        if stream.sending is not None:
            await stream.sending.cancel()
        try:
            if keep:
                await self._spill(stream)
            else:
                _release([*stream.flying.values(), *stream.queue.values()])
                stream.flying.clear()
                stream.queue.clear()
                stream.landed.set()
        except StreamStopped:
            return
        run = stream.run
        if run is not None:
            stream.run = stream.sending = None
            run.error = "the sync was changed during the run" if keep else None
            final = RunStatus.INTERRUPTED if keep else RunStatus.CANCELLED
            with contextlib.suppress(Exception):
                await self._runner.finish(stream.sync, run, final)

    # from the consumer -----------------------------------------------------------------

    async def take(
        self,
        writes: list[PendingWrite],
        hold: set[str] = frozenset(),  # type: ignore[assignment]
        closing: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> tuple[list[PendingWrite], StreamTicket | None]:
        """Splits a batch's rows: those streamed from memory (their ticket) and those for the
        store (returned, for the caller to write). Rows of the syncs in `hold` (a snapshot in
        progress) go to the store once the sync's memory is empty; the syncs in `closing` (a
        snapshot that closes, a table truncated) will have removals pending for keys not
        named here, so what the cache says of them is dropped and their rows take the store
        path until those are sent. Nothing changes when a store read fails: the caller may
        call again."""
        if not self._streams or self.stopping:
            return writes, None
        for sync_id in closing:
            stream = self._streams.get(sync_id)
            if stream is not None:
                await self._quiet(stream)
                stream.overflow_all = True
                self.cache.forget(sync_id)
                self._start_checker()
        groups: dict[str, list[PendingWrite]] = {}
        to_store: list[PendingWrite] = []
        for w in writes:
            stream = self._streams.get(w.sync_id)
            if stream is None:
                to_store.append(w)
            else:
                groups.setdefault(w.sync_id, []).append(w)
        if not groups:
            return writes, None
        for sync_id in hold & groups.keys():
            await self._quiet(self._streams[sync_id])
        for sync_id in groups:
            await self._room(self._streams[sync_id])
        # Reads first, so a failing read changes nothing and the caller may try again.
        if self._store.shared:
            await self._check_epochs(list(groups))
        found: dict[str, dict[str, tuple[bytes | None, bool]]] = {}
        asked: dict[str, list[str]] = {}
        # What the cache says of each row's key, looked up once (a large map's lookups miss
        # the CPU's caches): valid while nothing awaits, so dropped once a store read did.
        cached: dict[str, list[Any]] = {}
        for sync_id, rows in groups.items():
            stream = self._streams[sync_id]
            if stream.overflow_all or sync_id in hold:
                continue
            get = self.cache.get(sync_id).get
            cached[sync_id] = held = [get(w.key, _UNKNOWN) for w in rows]
            if _UNKNOWN in held:
                queue, flying, overflow = stream.queue, stream.flying, stream.overflow
                missing = [
                    w.key
                    for w, h in zip(rows, held, strict=True)
                    if h is _UNKNOWN
                    and w.key not in queue
                    and w.key not in flying
                    and w.key not in overflow
                ]
                if missing:
                    asked[sync_id] = missing
        for sync_id, missing in asked.items():
            found[sync_id] = await self._store.held(sync_id, missing)
        if asked:
            cached.clear()
        ticket = StreamTicket()
        settle: list[tuple[_SyncStream, set[str]]] = []
        unchanged = 0
        for sync_id, rows in groups.items():
            stream = self._streams[sync_id]
            if stream.overflow_all or sync_id in hold:
                self._to_store(stream, rows, to_store, settle)
                continue
            n, kept = self._stream_rows(
                stream,
                rows,
                cached.get(sync_id),
                found.get(sync_id, {}),
                set(asked.get(sync_id, ())),
                ticket,
                to_store,
                settle,
            )
            unchanged += n
            if kept:
                stream.wake.set()
                self._start(stream)
        ticket.seal()
        if unchanged:
            self._metrics.rows_unchanged.inc(unchanged)
        for stream, keys in settle:
            await self._landed(stream, keys)
        return to_store, ticket

    async def _check_epochs(self, sync_ids: list[str]) -> None:
        """Another replica may have planned removals of keys this one caches as held (a
        snapshot it closed, a table truncated): a sync whose epoch moved since it was last
        looked at has its cache dropped before anything is decided from it (and a read
        failing after that only costs the cache's refill)."""
        epochs = await self._store.sync_epochs(sync_ids)
        for sync_id in sync_ids:
            epoch = epochs.get(sync_id, 0)
            if self._epochs.get(sync_id) != epoch:
                self.cache.forget(sync_id)
                self._epochs[sync_id] = epoch

    def _stream_rows(
        self,
        stream: _SyncStream,
        rows: list[PendingWrite],
        cached: list[Any] | None,
        found: dict[str, tuple[bytes | None, bool]],
        asked: set[str],
        ticket: StreamTicket,
        to_store: list[PendingWrite],
        settle: list[tuple[_SyncStream, set[str]]],
    ) -> tuple[int, int]:
        """Queues the rows of one sync; returns (dropped as unchanged, queued). `cached`: what
        the cache says of each row's key (_UNKNOWN: nothing), looked up since the last await,
        or None to look it up here; `found`: what the store said of the keys `asked` (a key
        it lacks is held nowhere)."""
        sync_id = stream.sync.id
        fresh = [(key, held) for key, (held, pending) in found.items() if not pending]
        if len(fresh) < len(found):
            self._mark_pending(stream, [key for key, (_, pending) in found.items() if pending])
        if cached is None:
            get = self.cache.get(sync_id).get
            cached = [get(w.key, _UNKNOWN) for w in rows]
        queue, flying = stream.queue, stream.flying
        unchanged = 0
        queued: list[_Version] = []
        store_rows: list[PendingWrite] = []
        overflow = stream.overflow
        for w, in_cache in zip(rows, cached, strict=True):
            key = w.key
            if key in overflow:
                store_rows.append(w)
                continue
            older = queue.get(key)
            flight = flying.get(key)
            if older is not None:
                held = older.synced_hash
            elif flight is not None:
                held = flight.synced_hash  # replaced by what the flight records, when it does
            elif in_cache is not _UNKNOWN:
                held = in_cache
            elif key in found:
                held = found[key][0]
            elif key in asked:
                held = None  # the store does not know it (not cached: its flight says)
            else:
                # Not looked up (it was pending while the store was read, and is no more):
                # what the destination holds is not known here, the store path knows.
                store_rows.append(w)
                continue
            idle = flight is None
            if w.op == "delete":
                if held is not None or not idle:
                    store_rows.append(w)  # a removal needs the source columns the store keeps
                    continue
                source = older.data if older is not None else w.source
                stream.supersede(key)
                if source is None:  # no version of it was ever read: nothing to remove
                    unchanged += 1
                    continue
                # A version was read but not recorded as sent: a process that stopped before
                # recording may have sent it, so the removal goes (idempotent if it did not).
                queued.append((w, MAYBE_HELD, source))
                continue
            # A queued older version is replaced, or needs no send when this one is held.
            if older is not None:
                stream.supersede(key)
            if idle and held == w.row_hash:
                unchanged += 1
                continue
            queued.append((w, held, None))
        if queued:
            stream.enqueue(queued, ticket)
        if fresh:
            self.cache.put(sync_id, fresh)
        if store_rows:
            self._to_store(stream, store_rows, to_store, settle)
        return unchanged, len(queued)

    def _to_store(
        self,
        stream: _SyncStream,
        rows: list[PendingWrite],
        to_store: list[PendingWrite],
        settle: list[tuple[_SyncStream, set[str]]],
    ) -> None:
        """Rows of `stream` that go to the store: their older versions still queued are
        superseded, and those in flight are waited for before the write (`settle`)."""
        keys = set()
        for w in rows:
            stream.supersede(w.key)
            keys.add(w.key)
        to_store.extend(rows)
        self._mark_pending(stream, keys)
        in_flight = keys & stream.flying.keys()
        if in_flight:
            settle.append((stream, in_flight))

    async def _room(self, stream: _SyncStream) -> None:
        """Waits for the sender to make room in a full queue (backpressure on the consumer)
        while it makes progress; a queue that stays full sends the sync's rows to the store."""
        if stream.queued_bytes <= self.queue_bytes or stream.overflow_all:
            return
        now = self._clock.monotonic()
        deadline = now + ROOM_WAIT_SECONDS
        stream.progress_at = max(stream.progress_at, now - STALL_SECONDS / 2)
        while stream.queued_bytes > self.queue_bytes and not self.stopping:
            now = self._clock.monotonic()
            left = min(deadline, stream.progress_at + STALL_SECONDS) - now
            if left <= 0:
                log.info(
                    "sync %s: over %d bytes wait in memory; its rows go to the store until the "
                    "destination catches up",
                    stream.sync.id,
                    self.queue_bytes,
                )
                stream.overflow_all = True
                self._start_checker()
                return
            stream.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.room.wait(), left)

    async def _landed(self, stream: _SyncStream, keys: set[str]) -> None:
        """Waits until none of these keys is in flight: each recorded, or stored if its batch
        was cancelled. Only then may a newer version of them be written pending."""
        while not keys.isdisjoint(stream.flying) and not self.stopping:
            stream.landed.clear()
            await stream.landed.wait()

    async def _quiet(self, stream: _SyncStream) -> None:
        """Waits until nothing of the sync is in memory (its snapshot's keys are then all in
        the store, where the snapshot closes)."""
        while (stream.queue or stream.flying) and not self.stopping:
            stream.wake.set()
            self._start(stream)
            # Memory empties as the sender takes queued rows (`room`) and flights land.
            stream.landed.clear()
            stream.room.clear()
            waits = [asyncio.ensure_future(e.wait()) for e in (stream.landed, stream.room)]
            try:
                await asyncio.wait(
                    waits, timeout=QUIET_CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiting in waits:
                    waiting.cancel()

    # the sender ------------------------------------------------------------------------

    def _start(self, stream: _SyncStream) -> None:
        if stream.pump is None or stream.pump.done():
            stream.pump = asyncio.create_task(self._pump(stream), name=f"stream-{stream.sync.id}")

    async def _pump(self, stream: _SyncStream) -> None:
        try:
            while True:
                if not stream.queue or stream.held_back:
                    stream.wake.clear()
                    try:
                        await asyncio.wait_for(stream.wake.wait(), STREAM_IDLE_SECONDS)
                    except TimeoutError:
                        if not stream.flying and not stream.queue:
                            await self._end_run(stream)
                            if not stream.queue:
                                return
                    continue
                await self._send_some(stream)
                run = stream.run
                if run is not None and run.started_at is not None:
                    age = (datetime.now(UTC) - run.started_at).total_seconds()
                    if age >= STREAM_RUN_SECONDS:
                        await self._end_run(stream)
        except RunAborted as exc:
            await self._abort(stream, exc.error)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("sync %s: streaming failed; its rows go to the store", stream.sync.id)
            await self._abort(stream, None)

    async def _send_some(self, stream: _SyncStream) -> None:
        sync = stream.sync
        config = sync.parsed_configuration
        linger = sync.schedule.schedule.linger_ms / 1000  # type: ignore[union-attr]
        sending = await self._sending(stream)
        size = sending.batch_size
        if linger > 0 and len(stream.queue) < size:
            await self._clock.sleep(linger)
        taken: list[_Queued] = []
        for key in list(itertools.islice(stream.queue, size)):
            if key in stream.flying:
                break  # its older version first
            entry = stream.queue.pop(key)
            stream.queued_bytes -= entry.size
            taken.append(entry)
        stream.room.set()
        if not taken:
            # The oldest waiting key is in flight: wait for that batch.
            first = next(iter(stream.queue))
            await sending.settle({first})
            sending.check()  # a batch that failed to record raises here
            return
        flying = stream.flying
        for entry in taken:
            flying[entry.key] = entry
            if entry.data is None and entry.write is not None and entry.write.data is not None:
                entry.data = orjson.loads(entry.write.data)
        page: list[PendingRow] = taken  # type: ignore[assignment]
        mapper = self._runner.mapper(sync)
        if renders_templates(mapper):
            plan = await plan_in_thread(page, config.mode, mapper, False)
        elif unchanged_over(mapper, sync.referenced_columns):
            plan = plan_changes(page, config.mode, _as_is)
        else:
            plan = plan_changes(page, config.mode, mapper)
        run = stream.run
        assert run is not None
        run.query_size += len(taken)
        counts = Counter(c.op for c in plan.changes)
        counts.update(f.op for f in plan.rejected)
        for op, n in counts.items():
            run.planned_rows.add(op, n)
            self._metrics.rows_planned.labels(op).inc(n)
        if plan.dropped:
            self._metrics.rows_unchanged.inc(len(plan.dropped))
            _release([stream.flying.pop(key) for key, _seq in plan.dropped])
            stream.landed.set()
        if plan.rejected:
            await self._record(stream, [], plan.rejected)
        for start in range(0, len(plan.changes), size):
            await sending.dispatch(plan.changes[start : start + size])

    async def _sending(self, stream: _SyncStream) -> _StreamSending:
        if stream.sending is not None and stream.run is not None:
            return stream.sending  # type: ignore[return-value]
        sync = stream.sync
        destination = await self._store.get_destination(sync.destination_id)
        if destination is None:
            raise RunAborted(DestinationError(f"destination {sync.destination_id} not found"))
        try:
            delivery = await self._runner.delivery(destination)
        except DestinationError as exc:
            raise RunAborted(exc) from exc
        run = SyncRun(
            id=await self._store.next_run_id(),
            sync_id=sync.id,
            created_at=datetime.now(UTC),
        )
        run.started_at = run.created_at
        stream.run = run
        await self._runner.enter(sync, run, RunStatus.QUEUED)
        await self._runner.enter(sync, run, RunStatus.PROCESSING)
        sending = _StreamSending(
            sync,
            run,
            delivery,
            record=lambda sent: self._recorded(stream, sent),
            batch_rows=self._metrics.batch_rows,
        )
        sending.batch_size = delivery.writer.batch_size
        stream.kind = delivery.writer.type_name
        stream.sending = sending
        return sending

    async def _recorded(self, stream: _SyncStream, sent: list[Sent]) -> None:
        """Writes what became of batches sent, then lets go of their rows."""
        delivered: list[RowChange] = []
        failed: list[RowFailure] = []
        for rows, result in sent:
            rejected = result.rejected
            if not rejected:
                delivered.extend(rows)
                continue
            for row in rows:
                error = rejected.get(row.key)
                if error is None:
                    delivered.append(row)
                else:
                    failed.append(RowFailure(row.key, 0, row.op, error))
        await self._record(stream, delivered, failed)

    async def _record(
        self, stream: _SyncStream, delivered: list[RowChange], failed: list[RowFailure]
    ) -> None:
        """Records what became of rows in flight. Once begun, a record runs to its end even
        when its caller is cancelled (a flush, a run ending): it takes a refused row's newer
        version out of the queue to keep it pending in its place, so stopping halfway would
        lose that version. `_spill` waits for the records under way."""
        task = asyncio.ensure_future(self._record_now(stream, delivered, failed))
        stream.recording.add(task)
        task.add_done_callback(stream.recording.discard)
        task.add_done_callback(_retrieved)
        await asyncio.shield(task)

    async def _record_now(
        self, stream: _SyncStream, delivered: list[RowChange], failed: list[RowFailure]
    ) -> None:
        sync_id = stream.sync.id
        flying = stream.flying
        # A removal of a key the store never held leaves nothing to write.
        ok = [flying[r.key].write for r in delivered if r.op != "removed"]
        gone = [r.key for r in delivered if r.op == "removed"]
        bad: list[tuple[PendingWrite, str | None]] = []
        stored: list[_Queued] = []
        for f in failed:
            # A newer version waiting behind it is the one to keep pending; its fetch's offset
            # waits until it is.
            newer = stream.supersede(f.key, release=False)
            if newer is not None:
                stored.append(newer)
            bad.append((_kept(flying[f.key] if newer is None else newer), f.error))
        if failed:
            # Pending from now on: a newer version taken while this record is written goes to
            # the store behind it (`take` waits for the flight), never to the queue.
            self._mark_pending(stream, [f.key for f in failed])
        while True:
            try:
                left = await self._store.record_streamed(sync_id, ok, bad, self._clock.time())
                stream.progress_at = self._clock.monotonic()
                break
            except Exception as exc:
                if self.stopping:
                    raise StreamStopped(str(exc)) from exc
                log.warning("sync %s: recording streamed rows failed (%s); retrying", sync_id, exc)
                await self._clock.sleep(self._record_retry)
        now = self._clock.time()
        if stream.run is not None and (delivered or failed):
            outcomes = RowOutcomes(delivered=delivered, failed=failed)
            self._runner.count(stream.run, stream.kind, outcomes, now)
        pending = set(left)
        if pending:
            self._mark_pending(stream, pending)
            # Another writer made these pending: a newer version queued here goes to the
            # store too, so the two paths never hold versions of one key at once.
            behind = [e for key in pending if (e := stream.supersede(key, release=False))]
            if behind:
                try:
                    await self._write_entries(stream, [(e, None) for e in behind])
                except StreamStopped as exc:
                    for e in behind:
                        e.ticket.fail(exc)
                    raise
                stored.extend(behind)
        if bad:
            stream.failing = True
            self._retry_failed([sync_id])
        elif ok and stream.failing:
            stream.failing = False
            self._retry_failed([sync_id], now=True)  # the destination takes rows again
        if len(pending) > len(bad):  # another writer made some pending: a run sends them
            self._notify_pending([sync_id])
        synced: list[tuple[str, bytes | None]] = [
            (w.key, w.row_hash) for w in ok if w.key not in pending
        ]
        synced.extend((key, None) for key in gone)
        self.cache.put(sync_id, synced)
        queue = stream.queue
        if queue:
            for key, held in synced:
                newer = queue.get(key)
                if newer is not None:
                    newer.synced_hash = held
        landed = [flying.pop(r.key, None) for done in (delivered, failed) for r in done]
        _release([e for e in landed if e is not None])
        _release(stored)
        stream.landed.set()

    async def _end_run(self, stream: _SyncStream) -> None:
        run, sending = stream.run, stream.sending
        if sending is not None:
            await sending.finish()  # a fatal error ends it failed instead (RunAborted)
        stream.run = stream.sending = None
        stream.cut = False
        if run is not None:
            await self._runner.enter(stream.sync, run, RunStatus.REPORTING)
            final = RunStatus.WARNING if run.failed_rows.total else RunStatus.SUCCESS
            await self._runner.finish(stream.sync, run, final)

    async def _abort(self, stream: _SyncStream, error: DestinationError | None) -> None:
        """A fatal destination error (or a bug): what is queued goes to the store, where the
        runner's retries take it; the run ends failed."""
        run, sending = stream.run, stream.sending
        stream.run = stream.sending = None
        if sending is not None:
            await sending.cancel()
        # Until a run gets its rows through, the sync's rows wait in the store (as a failed
        # run blocks a continuous sync's runs until its retry).
        stream.overflow_all = True
        await self._spill(stream, reason=str(error) if error else "streaming failed")
        if run is not None:
            run.error = str(error) if error else "streaming failed"
            await self._runner.finish(stream.sync, run, RunStatus.FAILED)

    async def _spill(self, stream: _SyncStream, reason: str | None = None) -> None:
        """Everything of the sync in memory becomes pending in the store: flights that were
        cancelled (failed with `reason`, when given) and the queue (a newer version of a key
        replaces its flight); their tickets are then done. A removal stays one (`_kept`)."""
        while stream.recording:  # the flights a record under way resolves are not spilled
            await asyncio.wait(list(stream.recording))
        entries = [*stream.flying.values(), *stream.queue.values()]
        if not entries:
            return
        queued = stream.queue
        flown = [e for e in stream.flying.values() if e.key not in queued]
        cut = None if reason is None else reason[:500]
        try:
            await self._write_entries(
                stream, [*((e, cut) for e in flown), *((e, None) for e in queued.values())]
            )
        except StreamStopped as exc:
            for e in entries:
                e.ticket.fail(exc)
            raise
        stream.flying.clear()
        stream.landed.set()
        stream.queue.clear()
        stream.queued_bytes = 0
        self._mark_pending(stream, [e.key for e in entries])
        _release(entries)

    async def _write_entries(
        self, stream: _SyncStream, entries: list[tuple[_Queued, str | None]]
    ) -> None:
        """Writes versions in memory pending, retried until stored: an upsert as ingest made
        it (failed when an error is given), a removal as one (`_kept`). A run is asked for
        them. Raises StreamStopped when the service stops before they are stored."""
        # A mode without removals never sends one: the store drops such a delete of a key it
        # does not hold, as the planner would.
        removes = "removed" in MODE_OPS[stream.sync.parsed_configuration.mode]
        plain: list[PendingWrite] = []
        failed: list[tuple[PendingWrite, str | None]] = []
        for e, error in entries:
            if (e.op == "delete" and removes) or (e.op == "upsert" and error is not None):
                failed.append((_kept(e), error))
            else:
                plain.append(e.write)  # type: ignore[arg-type]
        while True:
            try:
                if plain:
                    await self._store.write_pending(plain)
                if failed:
                    await self._store.record_streamed(
                        stream.sync.id, [], failed, self._clock.time()
                    )
                break
            except Exception as exc:
                if self.stopping:
                    raise StreamStopped(str(exc)) from exc
                log.warning("sync %s: spilling rows failed (%s); retrying", stream.sync.id, exc)
                await self._clock.sleep(self._record_retry)
        if plain or any(error is None for _, error in failed):
            self._notify_pending([stream.sync.id])
        if any(error is not None for _, error in failed):
            stream.failing = True
            self._retry_failed([stream.sync.id])

    def _mark_pending(self, stream: _SyncStream, keys: Iterable[str]) -> None:
        """These keys have a pending version in the store now: their rows go there too until
        it is sent, and what the cache says of them is no longer sure."""
        if not stream.overflow_all:
            stream.overflow.update(keys)
            if len(stream.overflow) > MAX_OVERFLOW_KEYS:
                stream.overflow_all = True
                stream.overflow.clear()
        self.cache.forget(stream.sync.id, keys)
        self._start_checker()

    # rebalance and shutdown ------------------------------------------------------------

    async def flush(self, seconds: float) -> None:
        """Before partitions move or the service stops: batches in flight get `seconds` to be
        recorded, then are cancelled; whatever is left in memory is spilled to the store. The
        cache is forgotten (the next owner of a partition may have written its keys)."""
        streams = list(self._streams.values())
        for stream in streams:
            stream.held_back = True
        try:
            waiting = [s.sending.idle() for s in streams if s.sending is not None]
            if waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*waiting), seconds)
            for stream in streams:
                if stream.pump is not None and not stream.pump.done() and stream.flying:
                    stream.pump.cancel()
                    await asyncio.wait({stream.pump})
                if stream.sending is not None and stream.flying:
                    await stream.sending.cancel()
                    stream.cut = True
                await self._spill(stream)
        finally:
            for stream in streams:
                stream.held_back = False
            self.cache.clear()

    async def close(self) -> None:
        """At shutdown, after `flush`: runs still open end, `interrupted` when batches of
        theirs had to be cancelled (their rows are pending in the store, sent after a
        restart)."""
        self.stopping = True
        if self._checker is not None:
            self._checker.cancel()
        for warming in self._warming.values():
            warming.cancel()
        for stream in self._streams.values():
            if stream.pump is not None and not stream.pump.done():
                stream.pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream.pump
            if stream.sending is not None and stream.flying:
                await stream.sending.cancel()
                stream.cut = True
            run = stream.run
            if run is None:
                continue
            try:
                if stream.cut:
                    stream.run = stream.sending = None
                    run.error = "the service stopped during the run"
                    await self._runner.finish(stream.sync, run, RunStatus.INTERRUPTED)
                else:
                    await self._end_run(stream)
            except Exception as exc:
                log.warning("sync %s: run %s not finished: %s", stream.sync.id, run.id, exc)

    # keys known pending ----------------------------------------------------------------

    def _start_checker(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.create_task(self._check_overflow(), name="stream-overflow")

    async def _check_overflow(self) -> None:
        """Keys known pending stream again once the store has sent them, looked up in the
        store again (their cache entries are dropped)."""
        while any(s.overflow or s.overflow_all for s in self._streams.values()):
            await self._clock.sleep(OVERFLOW_CHECK_SECONDS)
            try:
                whole = [i for i, s in self._streams.items() if s.overflow_all]
                busy = await self._store.syncs_with_pending(whole) if whole else set()
                for sync_id in whole:
                    stream = self._streams[sync_id]
                    # A record under way may be about to make keys in flight pending.
                    if (
                        sync_id not in busy
                        and not stream.recording
                        and stream.queued_bytes <= self.queue_bytes // 2
                    ):
                        stream.overflow_all = False
                        self.cache.forget(sync_id)
                for sync_id, stream in list(self._streams.items()):
                    if stream.overflow and not stream.overflow_all:
                        keys = list(stream.overflow)
                        still = await self._store.pending_among(sync_id, keys)
                        # A key in flight stays: its record may be about to make it pending.
                        sent = set(keys) - still - stream.flying.keys()
                        stream.overflow -= sent
                        # What the cache took in meanwhile (a flight that landed after its
                        # key went to the store) may be undone by what the store sent since,
                        # a removal: the store tells again.
                        self.cache.forget(sync_id, sent)
            except Exception as exc:
                log.debug("pending keys not looked up: %s", exc)


def _as_is(row: dict[str, Any]) -> dict[str, Any]:
    return row


def _release(entries: list[_Queued]) -> None:
    """Lets go of rows in memory: each ticket is told once how many of its rows left."""
    ticket = None
    n = 0
    for e in entries:
        if e.ticket is not ticket:
            if n:
                ticket.release(n)  # type: ignore[union-attr]
            ticket, n = e.ticket, 0
        n += 1
    if n:
        ticket.release(n)  # type: ignore[union-attr]


def _retrieved(task: asyncio.Future[None]) -> None:
    """Marks a record's error seen: when its caller was cancelled nobody awaits it, and what it
    did not store keeps its fetch's offset back (read again after a restart)."""
    if not task.cancelled():
        task.exception()


def _kept(entry: _Queued) -> PendingWrite:
    """The version of a row in memory to write pending: an upsert as ingest made it, a removal
    as a delete whose data is the source columns it sends (the store keeps it pending as a
    removal of a key that may be held, `Store.record_streamed`)."""
    write = entry.write
    assert write is not None
    if entry.op == "upsert":
        return write
    body = orjson.dumps(entry.synced_source)
    return PendingWrite(write.sync_id, entry.key, "delete", body, None, entry.emitted_at)


class _StreamSending(Sending):
    batch_size: int = 100

    async def idle(self) -> None:
        """Until no batch is in flight."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
            self._collect()
