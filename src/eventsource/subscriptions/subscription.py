"""`Subscription`: one named reader of the global feed, from its checkpoint to live.

Catch-up and live delivery are the same loop over the store's ordered feed (never over bus
payloads): read a batch after the last position, deliver it in order, save the position, and
when a read comes back short, wait for an append signal or the poll interval. There is no
hand-over between a catch-up reader and a live stream, so no gap and no duplicate there.

A handler that takes pages (`BatchHandler`: a `DatabaseProjection`) gets each page whole, as
read (live, that is what has arrived), and records it in the checkpoint itself; the next page
is read meanwhile (`_pages.py`). A page it fails goes again one event at a time up to the
event that fails, so the retry and dead-letter path below sees exactly that event; the rest
goes on in a page again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import cast
from uuid import UUID

from eventsource._internal import telemetry
from eventsource._internal.clock import utc_now
from eventsource._internal.closing import closing_iterator
from eventsource._internal.retry import backoff_delay
from eventsource.exceptions import EventTypeNotFoundError, SerializationError
from eventsource.protocols import DeadLetterStatus
from eventsource.stores.interface import EventStore, Position, ReadOptions, StoredEvent
from eventsource.subscriptions._faults import is_infrastructure_error
from eventsource.subscriptions._pages import PageReader
from eventsource.subscriptions.interface import (
    AggregateParkedError,
    BatchCallback,
    CheckpointStore,
    DeadLetterSink,
    EventCallback,
    Lease,
    LeaseProvider,
    ListingDeadLetterSink,
    NotAdmittedError,
    SubscriptionConfig,
    SubscriptionState,
)
from eventsource.subscriptions.partitions import in_partition

__all__ = ["Subscription", "SubscriptionHealth"]

logger = logging.getLogger(__name__)

_PARKED_LIMIT = 10_000
"""Dead letters read to find the parked aggregates (the oldest first)."""


def _known_id(stored: StoredEvent | None) -> UUID | None:
    """The event's id for a checkpoint, None when even the store's row cannot tell it."""
    try:
        return stored.event_id if stored is not None else None
    except (EventTypeNotFoundError, SerializationError):
        return None


@dataclass(frozen=True, slots=True)
class SubscriptionHealth:
    name: str
    state: SubscriptionState
    position: Position | None
    """The last position processed (None: nothing yet)."""
    events_behind: int | None
    """About how many events of the feed lie after `position`, from the positions alone (no
    event is read): exact on a store whose feed has no holes, an upper bound after rolled-back
    appends on PostgreSQL and for a filtered subscription that is still catching up (it counts
    events of every type; a caught-up filtered subscription reports 0). None when the store
    could not be asked (`store_error`)."""
    processed: int
    dead_lettered: int
    last_error: str | None
    last_progress_at: datetime | None
    store_error: str | None = None
    """Why the feed's end could not be read for this report (the store is unreachable)."""

    @property
    def healthy(self) -> bool:
        """Not stopped for good. A subscription RECONNECTING to a database that is down is
        healthy (it recovers by itself, restarting the process would not help) but not ready."""
        return self.state is not SubscriptionState.FAILED

    @property
    def ready(self) -> bool:
        """Caught up and running: its read model can serve."""
        return self.state is SubscriptionState.LIVE and self.events_behind == 0


class Subscription:
    """Delivers the feed to `handler` in order, with checkpoints, retries and dead letters.

    Created and started by a `SubscriptionManager`. Delivery is at least once: events after
    the last saved checkpoint are delivered again after a crash.
    """

    def __init__(
        self,
        name: str,
        handler: EventCallback,
        event_store: EventStore,
        checkpoints: CheckpointStore,
        dead_letters: DeadLetterSink | None,
        config: SubscriptionConfig,
        leases: LeaseProvider | None = None,
        *,
        only: Callable[[StoredEvent], bool] | None = None,
        partition: tuple[int, int] | None = None,
        batch: BatchCallback | None = None,
    ) -> None:
        self.name = name
        if partition is not None and only is None:
            only = in_partition(*partition)
        self._only = only
        self.partition = partition
        """`(p, n)`: this is partition p of n (`subscribe_partitioned`)."""
        # A store that filters partitions in its query returns this partition's events only;
        # on another, the loop reads everything and skips the rest with `only`.
        pushed = partition is not None and event_store.filters_partitions
        self._skip = None if pushed else only
        self._batch = batch
        """A `BatchHandler`'s `handle_batch`: pages go to it, not to `handler` (see
        `_deliver_page`)."""
        self._handler_saved: Position | None = None
        """Where the batch handler last moved the checkpoint itself (counted there)."""
        self.checkpoints = checkpoints
        self._leases = leases
        self.config = config
        self._handler = handler
        self._deliver = handler
        self._store = event_store
        self._checkpoints = checkpoints
        self._dead_letters = dead_letters
        self.state = SubscriptionState.STARTING
        self.position: Position | None = None
        self.processed = 0
        self.dead_lettered = 0
        self.last_error: str | None = None
        self.last_progress_at: datetime | None = None
        self._progress: asyncio.Condition | None = None
        self._wake = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._stopping = False
        self._failed = False
        self._task: asyncio.Task[None] | None = None
        self._unsaved = 0
        self._consecutive_failures = 0
        self._last_delivered: StoredEvent | None = None
        self._saved_at = time.monotonic()
        self._saved_position: Position | None = None
        self._outages = 0
        self._resuming = False
        self._parked: set[UUID] | None = None
        """Aggregates behind a dead letter (`park_aggregate`; None when off or not loaded)."""
        self._park_lock = asyncio.Lock()
        if config.park_aggregate and not callable(getattr(dead_letters, "list", None)):
            raise ValueError(
                f"subscription {name!r}: park_aggregate needs a dead-letter repository "
                "(a DLQRepository) to park events in"
            )
        self._options = ReadOptions(
            limit=config.batch_size,
            batch_size=config.batch_size,
            event_types=config.event_types,
            aggregate_type=config.aggregate_type,
            tenant_id=config.tenant_id,
            partition=partition if pushed else None,
        )
        self._filtered = pushed or any(
            v is not None for v in (config.event_types, config.aggregate_type, config.tenant_id)
        )
        self._pages = (
            None
            if batch is None
            else PageReader(event_store, self._options, with_head=self._filtered)
        )
        """Pages for the batch handler, the next one read while it applies one."""

    def renewed(self) -> Subscription:
        """A new, unstarted subscription with this one's settings (for a rebuild)."""
        return Subscription(
            self.name,
            self._handler,
            self._store,
            self._checkpoints,
            self._dead_letters,
            self.config,
            self._leases,
            only=self._only,
            partition=self.partition,
            batch=self._batch,
        )

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        """Run the subscription in a task (again, after `stop`: from its checkpoint)."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._running.set()
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self.state = SubscriptionState.STARTING
        self._task = asyncio.create_task(self._run(), name=f"subscription {self.name}")
        telemetry.watch("subscription", self)

    def wake(self) -> None:
        """New events may be readable: read now instead of at the next poll."""
        self._wake.set()

    def pause(self) -> None:
        """Stop after the batch in progress until `resume()`; the checkpoint is kept."""
        self._running.clear()
        self._wake.set()

    def resume(self) -> None:
        self._running.set()

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a grace period
        """Finish the batch in progress, save the checkpoint, stop. Cancels after `timeout`."""
        self._stopping = True
        self._running.set()
        self._wake.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            logger.warning("subscription %s did not stop within %ss: cancelled", self.name, timeout)

    async def wait_for(
        self,
        position: Position,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented consistency-token API
    ) -> None:
        """Return once the subscription has processed `position` (read-your-writes: pass
        `AppendResult.last_position`). Raises `TimeoutError` after `timeout` seconds."""
        if self._progress is None:
            raise RuntimeError(f"subscription {self.name!r} is not started")
        progress = self._progress
        async with asyncio.timeout(timeout), progress:
            await progress.wait_for(lambda: self.position is not None and self.position >= position)

    async def health(self) -> SubscriptionHealth:
        """State, position and lag; one `current_position()` call, never raises (a store
        error shows as `store_error` with `events_behind` None)."""
        try:
            head = await self._store.current_position()
        except Exception as exc:
            return self.health_at(None, store_error=f"{type(exc).__qualname__}: {exc}")
        return self.health_at(head)

    def health_at(
        self, head: Position | None, *, store_error: str | None = None
    ) -> SubscriptionHealth:
        """`health()` against the feed's end `head`, read once by the caller for several
        subscriptions (None, with `store_error`, when it could not be read)."""
        behind: int | None = None
        if head is not None:
            position = self.position
            if self.state is SubscriptionState.STOPPED or (
                position is not None and position >= head
            ):
                behind = 0
            else:
                behind = max(0, head.sequence - (position.sequence if position else 0))
        return SubscriptionHealth(
            self.name,
            self.state,
            self.position,
            behind,
            self.processed,
            self.dead_lettered,
            self.last_error,
            self.last_progress_at,
            store_error,
        )

    async def handle(self, stored: StoredEvent) -> None:
        """Run the handler once on `stored`, outside the loop (dead-letter retries); raises
        `NotAdmittedError`, the handler untouched, for an event the filter does not admit."""
        reason = await self.refusal(stored)
        if reason is not None:
            raise NotAdmittedError(self.name, stored.event_id, reason)
        await self._delivery()(stored)

    async def refusal(self, stored: StoredEvent) -> str | None:
        """Why this subscription's filter (tenant, event types, aggregate type, partition)
        does not admit `stored`; None when it does. An event whose tenant cannot be read (it
        cannot be decoded) is refused by a subscription of one tenant."""
        config = self.config
        if config.event_types is not None and stored.event_type not in config.event_types:
            return f"its type {stored.event_type!r} is not among the subscription's event types"
        if not stored.envelope_complete:
            await self._store.load_envelope(stored)
        if config.aggregate_type is not None and stored.aggregate_type != config.aggregate_type:
            return (
                f"its aggregate type {stored.aggregate_type!r} is not the subscription's "
                f"{config.aggregate_type!r}"
            )
        if config.tenant_id is not None:
            error = stored.decode_error()
            if error is not None:
                return (
                    f"its tenant cannot be read ({type(error).__qualname__}: {error}), and the "
                    f"subscription reads tenant {config.tenant_id} only"
                )
            if stored.event.tenant_id != config.tenant_id:
                return (
                    f"it belongs to tenant {stored.event.tenant_id}, and the subscription "
                    f"reads tenant {config.tenant_id} only"
                )
        if self._only is not None and not self._only(stored):
            return "it belongs to another partition"
        return None

    def lag_seconds(self) -> float | None:
        """How far behind the feed this subscription is, in time: 0 when caught up, else the
        age of the last event it processed; None before it has processed one."""
        if self.state is SubscriptionState.LIVE:
            return 0.0
        if self.state in (SubscriptionState.STOPPED, SubscriptionState.STANDBY):
            return None
        last = self._last_delivered
        if last is None:
            return None
        return max(0.0, (utc_now() - last.recorded_at).total_seconds())

    def _delivery(self) -> EventCallback:
        """The handler, under a span per delivery attempt when tracing."""
        return self._traced(self._handler)

    def _traced(self, handler: EventCallback) -> EventCallback:
        """`handler` under a span per delivery attempt when tracing."""
        found = telemetry.tracer()
        if found is None:
            return handler
        span_name = f"project {self.name}"

        async def traced(stored: StoredEvent) -> None:
            if stored.decode_error() is None:
                attributes = telemetry.event_attributes(stored.event)
            else:  # the handler may skip it; if it reads it, it fails there
                attributes = {telemetry.EVENT_TYPE: stored.event_type}
            attributes[telemetry.SUBSCRIPTION] = self.name
            attributes[telemetry.POSITION] = str(stored.position)
            with telemetry.Operation(
                telemetry.start_span(found, span_name, "consumer", attributes)
            ):
                await handler(stored)

        return traced

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        self._failed = False  # set where an event stops the subscription (see below)
        failed = False
        try:
            while not self._stopping:
                try:
                    if not await self._run_leased():
                        return
                except Exception as exc:
                    if not is_infrastructure_error(exc):
                        raise
                    await self._wait_out_outage(exc)
        except Exception as exc:
            failed = True
            self.last_error = f"{type(exc).__qualname__}: {exc}"
            logger.exception("subscription %s failed", self.name)
            return
        finally:
            if self._pages is not None:
                await self._pages.close()
            # The checkpoint is saved before the state says the subscription ended, so
            # whoever sees FAILED or STOPPED reads the checkpoint it ended at.
            try:
                await self._save()
            except Exception:
                logger.exception("subscription %s could not save its checkpoint", self.name)
            if failed or self._failed:
                self.state = SubscriptionState.FAILED  # a failed one stays visible
            else:
                self.state = SubscriptionState.STOPPED
                telemetry.unwatch("subscription", self)

    async def _run_leased(self) -> bool:
        """Under the lease (if leases are used), from the checkpoint: until stopped (True),
        the lease is lost (True: stand by again), or an event cannot be placed (False)."""
        lease = None
        if self._leases is not None:
            lease = await self._acquire_lease()
            if lease is None:
                return True  # stopped while waiting
        try:
            await self._start_position()
            return await self._deliver_while_held(lease)
        finally:
            if lease is not None:
                try:
                    await self._save()
                except Exception as exc:  # kept in memory: saved when it goes on
                    logger.warning("subscription %s: checkpoint not saved: %s", self.name, exc)
                await lease.release()

    async def _wait_out_outage(self, exc: Exception) -> None:
        """The database or network failed: back off (exponential, capped, jittered), then
        `_run` goes on from where the subscription was. Never gives up."""
        self._outages += 1
        self.last_error = f"{type(exc).__qualname__}: {exc}"
        if self.state is not SubscriptionState.RECONNECTING:
            logger.warning(
                "subscription %s: %s; retrying until it is back", self.name, self.last_error
            )
        self.state = SubscriptionState.RECONNECTING
        self._resuming = True
        pause = backoff_delay(
            min(self._outages, 32), base=self.config.retry_base, cap=self.config.retry_cap
        )
        await self._sleep_until_woken(pause, stop_only=True)

    async def _start_position(self) -> None:
        """From the checkpoint (read after taking the lease: the last holder moved it); after
        an outage, from the checkpoint or from what was processed here, whichever is further
        (a `DatabaseProjection` may have committed an event whose reply was lost)."""
        checkpoint = await self._checkpoints.get(self.name)
        processed_here = self.position if self._resuming else None
        if checkpoint is not None:
            self.position = self._saved_position = checkpoint.position
        elif self.config.start_from == "end" and processed_here is None:
            self.position = await self._store.current_position()
        if processed_here is not None and (self.position is None or processed_here > self.position):
            self.position = processed_here  # processed before the outage, not saved yet
        else:
            self._unsaved = 0
        if self.config.park_aggregate:
            self._parked = await self._load_parked()
        self._resuming = False
        if self.state is not SubscriptionState.RECONNECTING:  # that lasts until a batch is done
            self.state = SubscriptionState.CATCHING_UP
        if self.position is not None:
            await self._notify_progress()  # waiters for a position reached before a restart

    async def _acquire_lease(self) -> Lease | None:
        assert self._leases is not None
        while not self._stopping:
            lease = await self._leases.try_acquire(self.name)
            if lease is not None:
                logger.info("subscription %s: lease taken, running here", self.name)
                return lease
            self.state = SubscriptionState.STANDBY
            await self._sleep_until_woken()
        return None

    async def _deliver_while_held(self, lease: Lease | None) -> bool:
        """Batches until stopped (True), the lease is lost (True: stand by again), or an
        event cannot be placed (False)."""
        while not self._stopping:
            if not self._running.is_set():
                await self._save()
                self.state = SubscriptionState.PAUSED
                await self._running.wait()
                continue
            if lease is not None and not await lease.alive():
                logger.warning("subscription %s: lease lost; standing by", self.name)
                return True
            if not await self._read_and_deliver():
                return False
            if self._outages:  # a whole batch went through: the outage is over
                logger.info("subscription %s: back after %d retries", self.name, self._outages)
                self._outages = 0
        return True

    async def _read_and_deliver(self) -> bool:
        """One batch; False when the subscription must stop (an event it cannot place)."""
        every_event = self.config.checkpoint.kind == "event"
        if self._batch is not None:
            # A batch handler takes the page at once (its transaction's writes cost far more
            # than holding the page), and the next page is read while it applies this one.
            self._deliver = self._one_event_batch()
            assert self._pages is not None
            head, page = await self._pages.next(self.position)
            read = len(page)
            if page and not await self._deliver_page(page, every_event=every_event):
                return False
        else:
            head = await self._store.current_position() if self._filtered else None
            handler = self._deliver = self._delivery()
            read = 0
            # Delivered as decoded, never held as a decoded batch: events die young, so the
            # garbage collector never has to promote them (a held batch halves the
            # throughput).
            async with closing_iterator(
                self._store.read_all(replace(self._options, after=self.position))
            ) as feed:
                async for stored in feed:
                    read += 1
                    if not await self._deliver_one(stored, handler, every_event=every_event):
                        return False
        if read and self.position is not None:
            await self._advance(self.position)  # wake waiters once per batch
        caught_up = read < self.config.batch_size
        if caught_up and head is not None and (self.position is None or head > self.position):
            # Every event of interest up to `head` was in this read: the filtered-out rest
            # counts as processed, so waiters and lag see the subscription as current.
            await self._advance(head)
        await self._maybe_save(batch_done=True)
        if caught_up:
            self.state = SubscriptionState.LIVE
            await self._sleep_until_woken()
        else:
            self.state = SubscriptionState.CATCHING_UP
        return True

    async def _deliver_one(
        self, stored: StoredEvent, handler: EventCallback, *, every_event: bool
    ) -> bool:
        """`stored`, in feed order, to `handler`; False when the subscription must stop at it
        (it stays unprocessed)."""
        only = self._skip  # a filter the store's read did not apply
        parked = self._parked  # `park_aggregate`: aggregates behind a dead letter
        # Events `only` refuses (another partition's) count as processed, unhandled.
        if (only is None or only(stored)) and not (parked and await self._parked_behind(stored)):
            try:
                await handler(stored)  # the fast path; failures take the retry path
            except Exception as exc:
                if not await self._deliver_failed(stored, exc):
                    if self._last_delivered is not None:
                        await self._advance(self._last_delivered.position)
                    return False
            else:
                if self._consecutive_failures:
                    self._recovered()
        self._count(stored)
        if every_event:
            await self._advance(stored.position)
            await self._save()
        return True

    def _count(self, stored: StoredEvent) -> None:
        """`stored` is processed (handled, passed over or dead-lettered)."""
        self._unsaved += 1
        self.processed += 1
        self._last_delivered = stored
        self.position = stored.position
        if self._handler_saved is not None and self._handler_saved == stored.position:
            self._unsaved = 0  # a batch handler moved the checkpoint here, counting them
            self._saved_position = stored.position

    # -- pages to a batch handler (`BatchHandler`, e.g. a DatabaseProjection) ----------------

    async def _deliver_page(self, page: list[StoredEvent], *, every_event: bool) -> bool:
        """A page of the feed to the batch handler, its admitted events in as few calls as
        possible: one, unless an event of a parked aggregate splits it (the events before it
        go first, as they would one at a time) or an event fails (the events after it go on
        in a batch again). False when the subscription must stop."""
        rest = page
        while rest:
            parked = self._parked  # grows when an event of the page is dead-lettered
            cut = next(
                (i for i, s in enumerate(rest) if parked and s.aggregate_id in parked), len(rest)
            )
            if cut == 0:  # parked behind its aggregate's dead letter, untried
                if not await self._deliver_one(rest[0], self._deliver, every_event=every_event):
                    return False
                rest = rest[1:]
                continue
            done = await self._deliver_batch(rest[:cut], every_event=every_event)
            if done is None:
                return False
            rest = rest[done:]
        return True

    async def _deliver_batch(self, events: list[StoredEvent], *, every_event: bool) -> int | None:
        """`events` in one `handle_batch` call (those `only` refuses count as processed,
        unhandled); how many of them are processed, None when the subscription must stop.
        When the call fails (not the infrastructure: that propagates, and the events come
        again after the outage), it applied none of them: they go one at a time, each in a
        one-event batch, until one fails, so that exactly that event takes the retry and
        dead-letter path and the events before it are applied once; the rest are left to
        the next batch."""
        assert self._batch is not None
        only = self._skip  # a filter the store's read did not apply
        admitted = events if only is None else [s for s in events if only(s)]
        if admitted:
            last = admitted[-1]
            through = len(events) if only is None else events.index(last) + 1
            try:
                await self._call_batch(admitted, processed=self._unsaved + through)
            except Exception as exc:
                if is_infrastructure_error(exc):
                    raise
                return await self._isolate(events, every_event=every_event)
            if self._consecutive_failures:
                self._recovered()
            self._handler_saved = last.position
        for stored in events:
            self._count(stored)
        if every_event and events and self.position is not None:
            await self._advance(self.position)
            await self._save()
        return len(events)

    async def _isolate(self, events: list[StoredEvent], *, every_event: bool) -> int | None:
        """`events` one at a time up to the first that fails its first attempt (retried or
        dead-lettered by then); how many were processed, None when the subscription must
        stop."""
        failed = False

        async def first_attempt(stored: StoredEvent) -> None:
            nonlocal failed
            try:
                await self._deliver(stored)
            except Exception:
                failed = True
                raise

        for done, stored in enumerate(events, 1):
            if not await self._deliver_one(stored, first_attempt, every_event=every_event):
                return None
            if failed:
                return done
        return len(events)

    async def _call_batch(self, events: list[StoredEvent], *, processed: int) -> None:
        """The batch handler on `events`, under one span when tracing."""
        assert self._batch is not None
        found = telemetry.tracer()
        if found is None:
            await self._batch(events, processed=processed)
            return
        attributes: dict[str, object] = {
            telemetry.SUBSCRIPTION: self.name,
            telemetry.POSITION: str(events[-1].position),
            telemetry.EVENT_COUNT: len(events),
        }
        with telemetry.Operation(
            telemetry.start_span(found, f"project {self.name}", "consumer", attributes)
        ):
            await self._batch(events, processed=processed)

    def _one_event_batch(self) -> EventCallback:
        """The batch handler as an `EventCallback` taking one event (retries, and finding
        the event that failed a batch), under a span per attempt when tracing."""
        batch = self._batch
        assert batch is not None

        async def one(stored: StoredEvent) -> None:
            await batch([stored], processed=self._unsaved + 1)
            self._handler_saved = stored.position

        return self._traced(one)

    def _recovered(self) -> None:
        self._consecutive_failures = 0
        if self.state is SubscriptionState.CIRCUIT_OPEN:
            logger.info("subscription %s: circuit closed again", self.name)
            self.state = SubscriptionState.CATCHING_UP

    async def _deliver_failed(self, stored: StoredEvent, first: Exception) -> bool:
        """The handler failed once on `stored`: retry, or park it; False when the
        subscription must stop (the event stays unprocessed)."""
        error: Exception | None = first
        tried = 1
        decode_error = stored.decode_error()
        undecodable = decode_error is not None
        if undecodable:
            await self._store.load_envelope(stored)  # its ids, for the log and the dead letter
        if decode_error is not None and self.config.on_undecodable == "stop":
            return self._stop_at_undecodable(stored, decode_error)
        while True:
            if error is None:
                self._recovered()
                return True
            if is_infrastructure_error(error):
                raise error  # the database, not the event: `_run` backs off, delivers it again
            if tried < self.config.max_attempts:
                error = await self._attempt(stored, first_attempt=tried + 1)
                tried = self.config.max_attempts
                continue
            self.last_error = f"{type(error).__qualname__}: {error}"
            if not undecodable:  # poison by itself, never a sign of a systemic failure
                self._consecutive_failures += 1
            breaker = self.config.circuit_breaker
            if breaker is not None and self._consecutive_failures >= breaker.failures:
                # So many events in a row failing is the handler's world failing (a database
                # down), not these events: stop dead-lettering, wait, and try this one again.
                if self.state is not SubscriptionState.CIRCUIT_OPEN:
                    logger.warning(
                        "subscription %s: %d events failed in a row, circuit open for %ss: %s",
                        self.name,
                        self._consecutive_failures,
                        breaker.cooldown,
                        self.last_error,
                    )
                self.state = SubscriptionState.CIRCUIT_OPEN
                self._wake.clear()
                await self._sleep_until_woken(breaker.cooldown, stop_only=True)
                if self._stopping:
                    return False
                error = await self._attempt(stored, first_attempt=1)
                continue
            return await self._park(stored, error)

    def _stop_at_undecodable(self, stored: StoredEvent, error: Exception) -> bool:
        """`on_undecodable="stop"`: FAILED at this event, which stays unprocessed."""
        self._failed = True  # `_run` says FAILED once the checkpoint is saved
        self.last_error = (
            f"cannot decode the stored {stored.event_type!r} event {stored.event_id} at "
            f"position {stored.position} (on_undecodable='stop'): "
            f"{type(error).__qualname__}: {error}"
        )
        logger.error("subscription %s stopped: %s", self.name, self.last_error)
        return False

    async def _attempt(self, stored: StoredEvent, *, first_attempt: int) -> Exception | None:
        """Tries `first_attempt`..`max_attempts`, with backoff before each: None when one
        succeeded, else the last error."""
        error: Exception | None = None
        for attempt in range(first_attempt, self.config.max_attempts + 1):
            if attempt > 1:
                pause = backoff_delay(
                    attempt - 1, base=self.config.retry_base, cap=self.config.retry_cap
                )
                await asyncio.sleep(pause)
            try:
                await self._deliver(stored)
            except Exception as exc:
                error = exc
                continue
            return None
        return error

    async def _park(self, stored: StoredEvent, error: Exception) -> bool:
        if self._dead_letters is None:
            self._failed = True  # `_run` says FAILED once the checkpoint is saved
            logger.error(
                "subscription %s stopped at %s (%s %s): %s; no dead-letter sink to park it in",
                self.name,
                stored.position,
                stored.event_type,
                stored.event_id,
                self.last_error,
            )
            return False
        await self._dead_letters.add(self.name, stored, error, self.config.max_attempts)
        self.dead_lettered += 1
        if self._parked is not None:
            self._parked.add(stored.aggregate_id)
        logger.warning(
            "subscription %s dead-lettered %s %s at %s after %d attempts: %s",
            self.name,
            stored.event_type,
            stored.event_id,
            stored.position,
            self.config.max_attempts,
            self.last_error,
        )
        return True

    # -- parking per aggregate (`park_aggregate`) -------------------------------------------

    def _listing_sink(self) -> ListingDeadLetterSink:
        return cast(ListingDeadLetterSink, self._dead_letters)

    async def _load_parked(self) -> set[UUID]:
        """The aggregates of this subscription's waiting dead letters (kept across restarts
        by the dead-letter repository itself)."""
        parked: set[UUID] = set()
        sink = self._listing_sink()
        for status in (DeadLetterStatus.FAILED, DeadLetterStatus.RETRYING):
            for letter in await sink.list(self.name, status=status, limit=_PARKED_LIMIT):
                parked.add((await self._store.get_event(letter.event_id)).aggregate_id)
        return parked

    async def _parked_behind(self, stored: StoredEvent) -> bool:
        """Park `stored` untried when its aggregate is parked; True when it was."""
        parked = self._parked
        if parked is None or stored.aggregate_id not in parked:
            return False
        async with self._park_lock:  # a release in progress decides first
            if stored.aggregate_id not in parked:
                return False
            error = AggregateParkedError(stored.aggregate_id)
            await self._listing_sink().add(self.name, stored, error, 0)
        self.dead_lettered += 1
        return True

    async def release_parked(self, aggregate_id: UUID) -> bool:
        """Deliver the events parked behind `aggregate_id`'s dead letter, in feed order, each
        resolved (by "retry") once handled; then the aggregate flows again and True is
        returned. False when one fails again: it and the rest stay parked."""
        parked = self._parked
        if parked is None or aggregate_id not in parked:
            return True
        sink = self._listing_sink()
        async with self._park_lock:
            waiting = []
            for letter in await sink.list(self.name, limit=_PARKED_LIMIT):
                stored = await self._store.get_event(letter.event_id)
                if stored.aggregate_id == aggregate_id:
                    waiting.append((stored.position, letter.id, stored))
            for _, letter_id, stored in sorted(waiting, key=lambda w: w[0]):
                reason = await self.refusal(stored)
                if reason is not None:  # left as it is; the aggregate stays parked
                    logger.warning(
                        "subscription %s: %s",
                        self.name,
                        NotAdmittedError(
                            self.name, stored.event_id, reason, dead_letter_id=letter_id
                        ),
                    )
                    return False
                if not await sink.mark_retrying(letter_id):
                    return False  # being retried elsewhere
                try:
                    await self.handle(stored)
                except Exception as exc:
                    await sink.add(self.name, stored, exc, 1)
                    return False
                await sink.resolve(letter_id, resolved_by="retry")
            parked.discard(aggregate_id)
        return True

    async def _advance(self, position: Position) -> None:
        self.position = position
        self.last_progress_at = utc_now()
        await self._notify_progress()

    async def _notify_progress(self) -> None:
        assert self._progress is not None
        async with self._progress:
            self._progress.notify_all()

    async def _maybe_save(self, *, batch_done: bool) -> None:
        strategy = self.config.checkpoint
        due = time.monotonic() - self._saved_at >= strategy.seconds
        if (strategy.kind == "batch" and batch_done) or (strategy.kind == "periodic" and due):
            await self._save()

    async def _save(self) -> None:
        position = self.position
        if position is None or (position == self._saved_position and not self._unsaved):
            return
        last = self._last_delivered
        await self._checkpoints.save(
            self.name,
            position,
            event_id=_known_id(last),
            event_type=last.event_type if last is not None else None,
            processed=self._unsaved,
        )
        self._unsaved = 0
        self._saved_position = position
        self._saved_at = time.monotonic()

    async def _sleep_until_woken(
        self, seconds: float | None = None, *, stop_only: bool = False
    ) -> None:
        """Sleep up to `seconds` (the poll interval) or until woken; with `stop_only`, only
        `stop()` cuts it short (append signals do not)."""
        wait = self.config.poll_interval if seconds is None else seconds
        deadline = asyncio.get_running_loop().time() + wait
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    await self._wake.wait()
                    self._wake.clear()
                    if not stop_only or self._stopping:
                        return
        except TimeoutError:
            pass
