"""The consume loop: fetch, prepare, then store and commit each batch in order, retrying what
fails for a while, setting aside what fails for good, and finishing in-flight work before a
rebalance moves partitions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiokafka import TopicPartition

from service.core.events import Change, InvalidEvent
from service.core.rows import PendingWrite, RouteIndex
from service.ingest import Ingest, IngestResult, PreparedPart
from service.pipeline.commit import Committer, OffsetLedger, Prepared, Stored, store_then_commit
from service.pipeline.health import ConsumerHealth
from service.source.dlq import DeadLetter
from service.source.kafka import EventBatch

log = logging.getLogger(__name__)

T = TypeVar("T")


class Source(Protocol):
    @property
    def generation(self) -> int: ...

    def on_revoke(self, callback: Callable[[], Awaitable[None]]) -> None: ...

    async def fetch(self, timeout_ms: int = 500) -> EventBatch: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> bool: ...

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int]: ...

    def partition_count(self, topic: str) -> int: ...

    async def committed(self, tp: TopicPartition) -> int | None: ...


class Catalog(Protocol):
    async def refresh(self) -> None: ...

    def routes_for(self, batch: EventBatch) -> list[RouteIndex]: ...

    def is_model(self, model_id: str) -> bool: ...


class DeadLetterSink(Protocol):
    #: True while the DLQ refuses what it is sent.
    failing: bool

    async def send(
        self, letters: Sequence[DeadLetter], stopping: Callable[[], bool] = ...
    ) -> bool: ...


class Notify(Protocol):
    def notify_pending(self, sync_ids: Iterable[str]) -> None: ...


class Ticket(Protocol):
    @property
    def done(self) -> asyncio.Future[None]: ...


class Streamer(Protocol):
    """Takes the rows of continuous syncs to send from memory (service.runner.stream)."""

    async def take(
        self, writes: list[PendingWrite], hold: set[str], closing: set[str]
    ) -> tuple[list[PendingWrite], Ticket | None]: ...

    async def flush(self, seconds: float) -> None: ...


@dataclass(slots=True, frozen=True)
class Backoff:
    """How a failing batch step is retried: `attempts` while the store answers (the batch is
    then the likely cause); without end while the store itself does not answer."""

    attempts: int = 5
    base: float = 0.5
    most: float = 30.0


class _GaveUp(Exception):
    pass


@dataclass(slots=True)
class _PendingClose:
    """A snapshot whose closing record was read on a topic of several partitions: it closes
    once every partition has been consumed up to where it ended when that record was read (the
    closing record's own partition: up to that record). Until then the closing record's
    partition is committed no further than that record, so a restart reads it again."""

    model_id: str
    snapshot_id: str
    event: Change
    routes: RouteIndex
    ends: dict[TopicPartition, int]
    hold: TopicPartition
    held_at: int


class ConsumeLoop:
    """Owns the order of work: batch n+1 is fetched and prepared while batch n is stored;
    batches are stored and committed one after another, so a commit never covers a batch that
    is not durable."""

    def __init__(
        self,
        source: Source,
        ingest: Ingest,
        catalog: Catalog,
        scheduler: Notify,
        dead_letters: DeadLetterSink,
        store_answers: Callable[[], Awaitable[bool]],
        *,
        health: ConsumerHealth | None = None,
        backoff: Backoff = Backoff(),
        drain_seconds: float = 20.0,
        streams: Streamer | None = None,
        stop_seconds: float = 5.0,
    ) -> None:
        self.source = source
        self.ingest = ingest
        self.catalog = catalog
        self.scheduler = scheduler
        self.dead_letters = dead_letters
        self._store_answers = store_answers
        self.health = health or ConsumerHealth()
        self.backoff = backoff
        self.drain_seconds = drain_seconds
        self.ledger = OffsetLedger()
        self.committer = Committer(source.commit, self.ledger)
        self.streams = streams
        #: At shutdown, how long rows in flight get to be recorded before they are stored.
        self.stop_seconds = stop_seconds
        self.stopping = False
        self._storing: asyncio.Task[IngestResult | None] | None = None
        #: Snapshots read but not closed yet, by model (or source route): their upserts count
        #: as rows of the snapshot, so a row streamed after it began is never planned removed.
        self._open: dict[str, str] = {}
        self._closing: list[_PendingClose] = []
        #: The offsets stored so far (commits of a held partition stay behind them).
        self._processed: dict[TopicPartition, int] = {}
        source.on_revoke(self.drain)

    # the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        storing: asyncio.Task[IngestResult | None] | None = None
        try:
            while not self.stopping:
                batch = await self.source.fetch(timeout_ms=500)
                if not batch.records:
                    continue
                prepared = await self._prepare(batch)
                if storing is not None and not await self._finished(storing) and self.stopping:
                    return  # stopping before the last batch was stored: nothing after it either
                if prepared is None:
                    return  # stopping: uncommitted, these events are read again
                if batch.generation != self.source.generation:
                    # Fetched before a rebalance: positions restart from the committed offsets,
                    # so this batch is read again by whoever owns its partitions now.
                    continue
                storing = self._storing = asyncio.create_task(
                    self._store_and_commit(batch, prepared), name="ingest"
                )
            if storing is not None and not await self._finished(storing):
                return
            await self._settle(self.stop_seconds)
        finally:
            if storing is not None and not storing.done():
                storing.cancel()  # uncommitted: these events are read again

    async def _settle(self, seconds: float) -> None:
        """Rows still in memory are sent or spilled to the store, then their offsets are
        committed (before a rebalance moves partitions, and when the service stops)."""
        if self.streams is not None:
            try:
                await self.streams.flush(seconds)
            except Exception as exc:
                log.warning("rows in memory were not all stored (%s); they are read again", exc)
        await self.committer.idle()

    @staticmethod
    async def _finished(task: asyncio.Task[IngestResult | None]) -> bool:
        """True when the task stored its batch and queued its offsets for commit; False when
        it was abandoned (stopping, or a rebalance that could not wait)."""
        await asyncio.wait({task})
        return not task.cancelled() and task.result() is not None

    async def drain(self) -> None:
        """Before partitions are revoked: let the batch in flight be stored and committed, or
        abandon it (uncommitted, read again by the next owner) if that takes too long."""
        task = self._storing
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.drain_seconds)
            except TimeoutError:
                log.warning(
                    "the batch in flight was not stored within %.0fs of a rebalance; "
                    "abandoned uncommitted, its events are read again",
                    self.drain_seconds,
                )
                task.cancel()
                await asyncio.wait({task})
            except Exception:
                pass  # its own failure is reported by the loop
        await self._settle(self.drain_seconds)
        self.committer.clear()
        self.ledger.committed.clear()  # the next owner's commits are its own
        # Held commits make the next owner read the closing records again.
        self._closing.clear()
        self._open.clear()
        self._processed.clear()

    # the steps -------------------------------------------------------------------------

    async def _prepare(self, batch: EventBatch) -> Prepared | None:
        # A sync created a moment ago gets every event fetched after its creation.
        try:
            await self._retry("reading the catalog", self.catalog.refresh, bounded=False)
        except _Stopping:
            return None
        routes = self.catalog.routes_for(batch)
        dead = self._unknown_models(batch, routes)
        try:
            # Retried while the broker does not answer; each step is idempotent on a retry.
            await self._retry(
                "reading end offsets", lambda: self._snapshots(batch, routes), bounded=False
            )
        except _Stopping:
            return None
        try:
            parts = self.ingest.prepare(
                batch.events, {}, event_routes=routes, suspect=batch.suspect
            )
            return Prepared(parts, dead, routes)
        except Exception:
            log.exception("preparing %d events failed; trying them one by one", len(batch.events))
        prepared = self._prepare_one_by_one(batch, routes)
        prepared.dead.extend(dead)
        return prepared

    def _unknown_models(self, batch: EventBatch, routes: list[RouteIndex]) -> list[DeadLetter]:
        """Events whose modelId names no model at all go to the DLQ (and are routed nowhere)."""
        dead: list[DeadLetter] = []
        unknown = {m for m in {e.model_id for e in batch.events} if not self.catalog.is_model(m)}
        if not unknown:
            return dead
        for i, event in enumerate(batch.events):
            if event.model_id in unknown:
                routes[i] = {}
                why = InvalidEvent("unknown_model", f"modelId {event.model_id[:100]!r} is no model")
                dead.append(DeadLetter.of(batch.messages[i], why))
        return dead

    async def _snapshots(self, batch: EventBatch, routes: list[RouteIndex]) -> None:
        """On a topic of several partitions, upserts of a model while its snapshot is open join
        the snapshot, and the closing record is put off (`_PendingClose`). A topic of one
        partition is read in order: its snapshots close where they end."""
        events = batch.events
        if not self._open and all(e.op != "snapshot" for e in events):
            return  # nothing of a snapshot in this batch, none open
        topics: list[str] | None = None
        for i, event in enumerate(events):
            if event.op == "upsert":
                snapshot_id = self._open.get(event.model_id)
                if snapshot_id is not None:
                    events[i] = event.replace(op="snapshot", snapshot_id=snapshot_id)
                continue
            if event.op != "snapshot" or event.snapshot_id is None:
                continue
            if topics is None:
                topics = batch.topics_of_events()
            topic = topics[i]
            if not event.last:
                if self.source.partition_count(topic) > 1:
                    self._open[event.model_id] = event.snapshot_id
                continue
            message = batch.messages[i]
            tp = TopicPartition(topic, message.partition)
            ends = {t: o for t, o in (await self.source.end_offsets(topic)).items() if o > 0}
            ends[tp] = message.offset + 1
            if len(ends) == 1:
                self._open.pop(event.model_id, None)
                continue  # every other partition is empty: nothing can come before the record
            self._closing.append(
                _PendingClose(
                    event.model_id,
                    event.snapshot_id,
                    event.replace(rows=[], last=True),
                    routes[i],
                    ends,
                    tp,
                    message.offset,
                )
            )
            events[i] = event.replace(last=False)
            self._open[event.model_id] = event.snapshot_id

    def _prepare_one_by_one(self, batch: EventBatch, routes: list[RouteIndex]) -> Prepared:
        prepared = Prepared([], [], routes)
        for i, event in enumerate(batch.events):
            try:
                prepared.parts.extend(
                    self.ingest.prepare(
                        [event],
                        {},
                        event_routes=[routes[i]],
                        suspect={0} if i in batch.suspect else (),
                    )
                )
            except Exception as exc:
                prepared.dead.append(DeadLetter.of(batch.messages[i], exc))
        return prepared

    async def _store_and_commit(self, batch: EventBatch, prepared: Prepared) -> IngestResult | None:
        reached = dict(batch.offsets)
        for close in self._closing:
            held = batch.offsets.get(close.hold)
            if held is not None and held > close.held_at:
                batch.offsets[close.hold] = max(
                    close.held_at, self.ledger.committed.get(close.hold, 0)
                )
        result = await store_then_commit(
            batch, prepared, send_dead=self._send_dead, store=self._store, committer=self.committer
        )
        if result is not None:
            self.scheduler.notify_pending(result.sync_ids)
            self._processed.update(reached)
            if self._closing and not await self._close_snapshots():
                return None
        return result

    async def _passed(self, tp: TopicPartition, end: int) -> bool:
        if max(self._processed.get(tp, 0), self.ledger.committed.get(tp, 0)) >= end:
            return True
        # A partition another member consumes: its group commits tell how far it got.
        committed = await self.source.committed(tp)
        return committed is not None and committed >= end

    async def _close_snapshots(self) -> bool:
        """Closes the put-off snapshots whose topic was consumed far enough; False when the
        service stopped first."""
        for close in list(self._closing):
            try:
                done = [await self._passed(tp, end) for tp, end in close.ends.items()]
            except Exception as exc:
                log.warning("reading committed offsets failed (%s); trying later", exc)
                return True
            if not all(done):
                continue
            parts = self.ingest.prepare([close.event], {}, event_routes=[close.routes])
            try:
                result = await self._retry(
                    "closing a snapshot", lambda p=parts: self._close(p), bounded=False
                )
            except _Stopping:
                return False
            self.scheduler.notify_pending(result.sync_ids)
            self._closing.remove(close)
            if self._open.get(close.model_id) == close.snapshot_id:
                del self._open[close.model_id]
            if not any(c.hold == close.hold for c in self._closing):
                self.committer.add({close.hold: self._processed[close.hold]})
        return True

    async def _close(self, parts: list[PreparedPart]) -> IngestResult:
        """Stores a put-off closing record; the streams first let go of what they hold of
        its syncs (the removals it plans are for keys they may have in memory or cached)."""
        if self.streams is not None:
            for part in parts:
                await self._stream(part)
        return await self.ingest.store(parts)

    async def _send_dead(self, letters: Sequence[DeadLetter]) -> bool:
        if not letters:
            return True
        return await self.dead_letters.send(letters, lambda: self.stopping)

    @property
    def stuck(self) -> bool:
        """True while a step fails and is retried: the DLQ, the store, the catalog."""
        return self.health.stuck or self.dead_letters.failing

    async def _store(self, batch: EventBatch, prepared: Prepared) -> Stored | None:
        streamed: list[asyncio.Future[None]] = []
        try:
            if self.streams is not None:
                for part in prepared.parts:
                    ticket = await self._retry(
                        "reading what destinations hold",
                        lambda p=part: self._stream(p),  # type: ignore[misc]
                        bounded=False,
                    )
                    if ticket is not None:
                        streamed.append(ticket.done)
            result = await self._retry("storing", lambda: self.ingest.store(prepared.parts))
            return Stored(result, streamed=streamed)
        except _Stopping:
            return None
        except _GaveUp:
            log.error(
                "storing %d events failed %d times while the store answers; storing them "
                "one by one, the failing ones go to the DLQ",
                len(batch.events),
                self.backoff.attempts,
            )
        stored = await self._store_one_by_one(batch, prepared)
        if stored is not None:
            stored.streamed = streamed
        return stored

    async def _stream(self, part: PreparedPart) -> Ticket | None:
        """Hands the part's rows of continuous syncs to the streams; the rest stay for the
        store. Rows of a sync whose snapshot this part touches stay for the store."""
        assert self.streams is not None
        snapshot = part.snapshot
        closing = {sync_id for sync_id, _ in snapshot.closed}
        closing.update(snapshot.truncated)
        hold = {sync_id for sync_id, _, _ in snapshot.keys} | closing
        part.writes, ticket = await self.streams.take(part.writes, hold, closing)
        part.found.sync_ids = {w.sync_id for w in part.writes} | hold
        part.found.sync_ids.update(r.sync_id for r in snapshot.rejected)
        return ticket

    async def _store_one_by_one(self, batch: EventBatch, prepared: Prepared) -> Stored | None:
        stored = Stored(IngestResult(), [])
        total = stored.result
        for i, event in enumerate(batch.events):
            suspect = {0} if i in batch.suspect else ()
            parts = self.ingest.prepare(
                [event], {}, event_routes=[prepared.event_routes[i]], suspect=suspect
            )
            try:
                one = await self._retry("storing one event", lambda p=parts: self.ingest.store(p))
            except _Stopping:
                return None
            except _GaveUp as exc:
                stored.dead.append(DeadLetter.of(batch.messages[i], exc.__cause__ or exc))
                continue
            total.sync_ids |= one.sync_ids
            total.rows += one.rows
        return stored

    async def _retry(
        self, what: str, step: Callable[[], Awaitable[T]], *, bounded: bool = True
    ) -> T:
        """Runs `step` until it succeeds. Raises _Stopping once the service stops, and (when
        `bounded`) _GaveUp after `backoff.attempts` failures while the store answers; while
        the store does not answer, the failures are not the batch's and are not counted."""
        delay = self.backoff.base
        attempts = 0
        while True:
            try:
                value = await step()
            except Exception as exc:
                self.health.failed(what, exc)
                if self.stopping:
                    raise _Stopping from exc
                if bounded and await self._store_answers():
                    attempts += 1
                    if attempts >= self.backoff.attempts:
                        self.health.recovered(what)
                        raise _GaveUp(str(exc)) from exc
                log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff.most)
                continue
            self.health.recovered(what)
            return value


class _Stopping(Exception):
    pass
