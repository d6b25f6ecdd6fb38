"""`OutboxRelay`: publishes the outbox to an event bus, in per-aggregate order, at least once.

Each round leases a batch (oldest first; rows another relay holds, and the later rows of
their aggregates, are left alone), decodes it row by row, publishes it to the bus in one
call, and marks it published when the batch ends. Failures are isolated per row:

- a row that cannot be decoded fails alone; the later rows of its aggregate wait behind it
  and every other aggregate publishes;
- if the bus refuses the batch, the relay publishes it again aggregate by aggregate, and a
  failing aggregate row by row, to find the row that fails; the others publish;
- a broker that cannot be reached (`BusConnectionError`, `OSError`) fails the whole batch:
  nothing is wrong with the rows, so the relay retries with backoff and never parks them.

A failed row is retried after an exponential backoff; after `max_attempts` failed attempts
it is parked, where `OutboxRepository.list_parked` shows it and `retry_parked` /
`discard_parked` release it. Until then it holds back the later rows of its aggregate.

If the relay dies after publishing but before the mark, its lease expires and the rows are
published again: consumers drop the duplicates with an inbox (`InboxHandler`). Several relays
may run at once, in one process or many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

from eventsource._internal import telemetry
from eventsource._internal.clock import utc_now
from eventsource._internal.closing import AsyncClosing
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import BusConnectionError, EventSourceError
from eventsource.outbox.interface import OutboxBatch, OutboxEntry, OutboxRepository
from eventsource.stores.interface import EventPublisher, EventStore

__all__ = ["OutboxRelay"]

logger = logging.getLogger(__name__)


class OutboxRelay(AsyncClosing):
    """Moves outbox rows to `bus` (an `EventBus`, or anything with `publish(events)`).

    `await relay.start()` runs it in the background (or call `publish_pending()` yourself);
    `await relay.stop()` (or `async with`) ends it.

    With `store`, the relay wakes as soon as that store signals an append (LISTEN/NOTIFY on
    PostgreSQL) and polls every `poll_interval` seconds anyway. Published rows are deleted
    `cleanup_after` their publication. A row that failed `max_attempts` times is parked.
    """

    def __init__(
        self,
        outbox: OutboxRepository,
        bus: EventPublisher,
        *,
        registry: EventRegistry | None = None,
        store: EventStore | None = None,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        retry_delay: float = 1.0,
        retry_delay_max: float = 300.0,
        max_attempts: int = 10,
        cleanup_after: timedelta = timedelta(days=7),
        cleanup_interval: float = 600.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self.outbox = outbox
        self.bus = bus
        self.store = store
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self.max_attempts = max_attempts
        self.cleanup_after = cleanup_after
        self.cleanup_interval = cleanup_interval
        self.published = 0
        """Events published (a batch published again after a crash counts twice)."""
        self.failures = 0
        """Batches in which some row failed (to decode or to publish)."""
        self.failed_events = 0
        """Failed attempts of rows (each counts once per attempt)."""
        self.parked = 0
        """Rows this relay parked."""
        self._codec = EventCodec(registry)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False
        telemetry.watch("relay", self)

    async def publish_pending(self) -> int:
        """Claim one batch and publish it; returns how many rows were published."""
        async with self.outbox.claim(self.batch_size) as batch:
            entries = list(batch.entries)
            if not entries:
                return 0
            span = telemetry.operation(
                "outbox relay", lambda: {telemetry.EVENT_COUNT: len(entries)}, "producer"
            )
            attempt = _Round(self, batch)
            try:
                with span:
                    await attempt.run(entries)
                    if attempt.error is not None:
                        raise attempt.error  # so the span records the failure
            except Exception as exc:
                if exc is not attempt.error:
                    raise
            finally:
                attempt.error = None  # its traceback refers back to the round: free both now
        self.published += attempt.published
        return attempt.published

    def _decode(self, entry: OutboxEntry) -> DomainEvent:
        return self._codec.decode(
            entry.event_type, entry.event_version, entry.payload, f"outbox row {entry.id}"
        )

    def _retry_in(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.retry_delay_max, self.retry_delay * 2 ** (attempts - 1)))

    async def run(self) -> None:
        """Publish until cancelled: batches back to back while there are more, then wait
        for an append signal or `poll_interval`."""
        async with contextlib.AsyncExitStack() as stack:
            signal = await stack.enter_async_context(self.store.listen()) if self.store else None
            last_cleanup = asyncio.get_running_loop().time()
            while not self._stopping:
                self._busy = True
                try:
                    count = await self.publish_pending()
                except EventSourceError as exc:  # the outbox's database: try again later
                    logger.warning("outbox relay: cannot claim rows: %s", exc)
                    count = 0
                finally:
                    self._busy = False
                if self._stopping:
                    break
                now = asyncio.get_running_loop().time()
                if now - last_cleanup >= self.cleanup_interval:
                    last_cleanup = now
                    with contextlib.suppress(EventSourceError):
                        await self.outbox.cleanup(self.cleanup_after)
                if count >= self.batch_size:
                    continue
                if signal is None:
                    await asyncio.sleep(self.poll_interval)
                else:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.poll_interval):
                            await signal.wait()

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop once the batch in hand is published and marked (a relay cancelled mid-batch
        instead publishes that batch again next time)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not self._busy:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        await self.stop()


def _is_outage(exc: BaseException) -> bool:
    """The broker could not be reached: nothing is wrong with the rows themselves."""
    return isinstance(exc, BusConnectionError | OSError)


class _Round:
    """One batch of one relay: which rows published, which failed, which wait."""

    def __init__(self, relay: OutboxRelay, batch: OutboxBatch) -> None:
        self.relay = relay
        self.batch = batch
        self.published = 0
        self.error: Exception | None = None
        """The first failure of this round (of a row or of the broker), if any."""

    async def run(self, entries: list[OutboxEntry]) -> None:
        groups = await self._decode(entries)
        ready = [pair for group in groups for pair in group]
        if ready:
            try:
                await self.relay.bus.publish([event for _, event in ready])
            except Exception as exc:
                if _is_outage(exc):
                    await self._outage([entry for entry, _ in ready], exc)
                else:
                    await self._isolate(groups)
            else:
                await self._published([entry for entry, _ in ready])
        if self.error is not None:
            self.relay.failures += 1

    async def _decode(
        self, entries: list[OutboxEntry]
    ) -> list[list[tuple[OutboxEntry, DomainEvent]]]:
        """The decodable rows, per aggregate in order, each aggregate cut at its first row
        that does not decode (that row fails; the ones after it wait behind it)."""
        groups: dict[object, list[tuple[OutboxEntry, DomainEvent]]] = {}
        stopped: set[object] = set()
        for entry in entries:
            if entry.aggregate_id in stopped:
                continue
            try:
                event = self.relay._decode(entry)
            except Exception as exc:
                stopped.add(entry.aggregate_id)
                await self._row_failed(entry, exc)
                continue
            groups.setdefault(entry.aggregate_id, []).append((entry, event))
        return list(groups.values())

    async def _isolate(self, groups: list[list[tuple[OutboxEntry, DomainEvent]]]) -> None:
        """The batch publish failed: publish aggregate by aggregate, and a failing aggregate
        row by row, so one bad row holds back only its own aggregate."""
        for index, group in enumerate(groups):
            try:
                await self.relay.bus.publish([event for _, event in group])
            except Exception as exc:
                if _is_outage(exc):
                    rest = [entry for g in groups[index:] for entry, _ in g]
                    await self._outage(rest, exc)
                    return
                outage = await self._row_by_row(group)
                if outage is not None:
                    rest = [entry for g in groups[index + 1 :] for entry, _ in g]
                    if rest:
                        await self._outage(rest, outage)
                    return
                continue
            await self._published([entry for entry, _ in group])

    async def _row_by_row(self, group: list[tuple[OutboxEntry, DomainEvent]]) -> Exception | None:
        """Publish one aggregate's rows one at a time up to the first that fails; the error
        if the broker turned out to be unreachable (the rows not published then wait)."""
        for index, (entry, event) in enumerate(group):
            try:
                await self.relay.bus.publish([event])
            except Exception as exc:
                if _is_outage(exc):
                    await self._outage([e for e, _ in group[index:]], exc)
                    return exc
                await self._row_failed(entry, exc)
                return None
            await self._published([entry])
        return None

    async def _published(self, entries: Sequence[OutboxEntry]) -> None:
        await self.batch.published(entries)
        self.published += len(entries)

    async def _row_failed(self, entry: OutboxEntry, exc: Exception) -> None:
        """A failure of this row itself: retried with backoff, parked after `max_attempts`."""
        relay = self.relay
        if self.error is None:
            self.error = exc
        relay.failed_events += 1
        attempts = entry.attempts + 1
        error = repr(exc)
        if attempts >= relay.max_attempts:
            relay.parked += 1
            logger.error(
                "outbox relay: parked outbox row %d (event %s of %s %s) after %d attempts;"
                " the later events of that aggregate wait until it is retried or discarded"
                " (OutboxRepository.retry_parked / discard_parked): %s",
                entry.id,
                entry.event_id,
                entry.aggregate_type,
                entry.aggregate_id,
                attempts,
                error,
            )
            await self.batch.parked([entry], error)
            return
        delay = relay._retry_in(attempts)
        logger.warning(
            "outbox relay: outbox row %d (event %s) failed (attempt %d of %d), retry in %.1f s: %s",
            entry.id,
            entry.event_id,
            attempts,
            relay.max_attempts,
            delay,
            error,
        )
        await self.batch.failed([entry], error, utc_now() + timedelta(seconds=delay))

    async def _outage(self, entries: Sequence[OutboxEntry], exc: Exception) -> None:
        """The broker is unreachable: the rows are retried with backoff, never parked."""
        relay = self.relay
        if self.error is None:
            self.error = exc
        relay.failed_events += len(entries)
        attempts = max(entry.attempts for entry in entries) + 1
        delay = relay._retry_in(attempts)
        logger.warning(
            "outbox relay: publishing %d events failed (attempt %d), retry in %.1f s: %r",
            len(entries),
            attempts,
            delay,
            exc,
        )
        await self.batch.failed(entries, repr(exc), utc_now() + timedelta(seconds=delay))
