"""Pages to a batch handler (`BatchHandler`, e.g. a `DatabaseProjection`): the part of
`Subscription`'s loop that hands a page of the feed over in as few calls as possible.

A page goes in one `handle_batch` call unless an event of a parked aggregate splits it (the
events before it go first, as they would one at a time) or an event fails: then the page goes
again one event at a time up to the event that fails, so the retry and dead-letter path
(`_failures.py`) sees exactly that event, and the rest goes on in a page again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID

from eventsource._internal import telemetry
from eventsource.stores.interface import Position, StoredEvent
from eventsource.subscriptions._faults import is_infrastructure_error
from eventsource.subscriptions.interface import BatchCallback, EventCallback

__all__ = ["PageDelivery"]


class PageDelivery:
    """`Subscription`'s delivery of pages to a batch handler (a mixin: the loop's state and
    per-event path live in `Subscription`)."""

    if TYPE_CHECKING:  # what this part uses of `Subscription`
        name: str
        position: Position | None
        _batch: BatchCallback | None
        _skip: Callable[[StoredEvent], bool] | None
        _parked: set[UUID] | None
        _unsaved: int
        _consecutive_failures: int
        _handler_saved: Position | None
        _deliver: EventCallback

        async def _deliver_one(
            self, stored: StoredEvent, handler: EventCallback, *, every_event: bool
        ) -> bool: ...
        def _count(self, stored: StoredEvent) -> None: ...
        async def _advance(self, position: Position) -> None: ...
        async def _save(self) -> None: ...
        def _recovered(self) -> None: ...
        def _traced(self, handler: EventCallback) -> EventCallback: ...

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
