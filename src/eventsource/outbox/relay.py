"""`OutboxRelay`: publishes the outbox to an event bus, in per-aggregate order, at least once.

Each round claims a batch (oldest first; rows another relay holds, and the later rows of
their aggregates, are left alone), publishes it to the bus in one call, and marks it
published when the batch ends. If the publish fails, the batch's rows are retried after an
exponential backoff, and later events of those aggregates wait behind them. If the relay dies
after publishing but before the mark, the rows are claimed and published again: consumers
drop the duplicates with an inbox (`InboxHandler`). Several relays may run at once, in one
process or many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from eventsource._internal import telemetry
from eventsource._internal.clock import utc_now
from eventsource._internal.closing import AsyncClosing
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventSourceError
from eventsource.outbox.interface import OutboxEntry, OutboxRepository
from eventsource.stores.interface import EventPublisher, EventStore

__all__ = ["OutboxRelay"]

logger = logging.getLogger(__name__)


class OutboxRelay(AsyncClosing):
    """Moves outbox rows to `bus` (an `EventBus`, or anything with `publish(events)`).

    `await relay.start()` runs it in the background (or call `publish_pending()` yourself);
    `await relay.stop()` (or `async with`) ends it.

    With `store`, the relay wakes as soon as that store signals an append (LISTEN/NOTIFY on
    PostgreSQL) and polls every `poll_interval` seconds anyway. Published rows are deleted
    `cleanup_after` their publication.
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
        cleanup_after: timedelta = timedelta(days=7),
        cleanup_interval: float = 600.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.outbox = outbox
        self.bus = bus
        self.store = store
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.retry_delay_max = retry_delay_max
        self.cleanup_after = cleanup_after
        self.cleanup_interval = cleanup_interval
        self.published = 0
        """Events published (a batch published again after a crash counts twice)."""
        self.failures = 0
        """Batches whose publish failed."""
        self.failed_events = 0
        """Events in those batches."""
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
            try:
                with span:
                    events = [self._decode(entry) for entry in entries]
                    await self.bus.publish(events)
            except (EventSourceError, OSError) as exc:
                self.failures += 1
                self.failed_events += len(entries)
                attempts = max(entry.attempts for entry in entries) + 1
                delay = min(self.retry_delay_max, self.retry_delay * 2 ** (attempts - 1))
                logger.warning(
                    "outbox relay: publishing %d events failed (attempt %d), retry in %.1f s: %r",
                    len(entries),
                    attempts,
                    delay,
                    exc,
                )
                await batch.failed(entries, repr(exc)[:2000], utc_now() + timedelta(seconds=delay))
                return 0
            await batch.published(entries)
        self.published += len(entries)
        return len(entries)

    def _decode(self, entry: OutboxEntry) -> DomainEvent:
        return self._codec.decode(
            entry.event_type, entry.event_version, entry.payload, f"outbox row {entry.id}"
        )

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
