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
from uuid import UUID

from eventsource._internal import telemetry
from eventsource._internal.clock import utc_now
from eventsource._internal.closing import closing_iterator
from eventsource._internal.retry import backoff_delay
from eventsource.exceptions import EventTypeNotFoundError, SerializationError
from eventsource.stores.interface import EventStore, Position, ReadOptions, StoredEvent
from eventsource.subscriptions._batches import PageDelivery
from eventsource.subscriptions._failures import FailurePolicy
from eventsource.subscriptions._faults import is_infrastructure_error
from eventsource.subscriptions._pages import PageReader
from eventsource.subscriptions.interface import (
    BatchCallback,
    CheckpointStore,
    DeadLetterSink,
    EventCallback,
    Lease,
    LeaseProvider,
    NotAdmittedError,
    SubscriptionConfig,
    SubscriptionState,
)
from eventsource.subscriptions.partitions import in_partition

__all__ = ["Subscription", "SubscriptionHealth"]

logger = logging.getLogger(__name__)


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


class Subscription(PageDelivery, FailurePolicy):
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

    async def count_to_read(self, after: Position | None = None) -> int:
        """How many events this subscription would read after `after` now (its filters
        applied as the store applies them), counted by the store without reading them: the
        total a rebuild's progress is measured against."""
        options = replace(self._options, after=after, limit=None)
        return await self._store.count_events(options)

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
        position: Position | None,
        timeout: float | None = None,  # noqa: ASYNC109 - the documented consistency-token API
    ) -> None:
        """Return once the subscription has processed `position` (read-your-writes: pass
        `AppendResult.last_position`; None, what an append of no events returns, has nothing
        to wait for). Raises `TimeoutError` after `timeout` seconds."""
        if self._progress is None:
            raise RuntimeError(f"subscription {self.name!r} is not started")
        if position is None:
            return
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
