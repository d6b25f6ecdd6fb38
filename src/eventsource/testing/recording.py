"""Recording what was published, waiting for an in-memory bus to go idle, and the
assertions that read them: `assert_event_published`, `assert_nothing_published`,
`assert_stream`.

`RecordingPublisher` is an `EventPublisher` (what `AggregateRepository(event_publisher=...)`
takes) that keeps what it was given and may forward it. `RecordingEventBus` is an
`InMemoryEventBus` that also keeps what was published through it, and knows when it is idle:
nothing queued for its consumer, nothing being handled, no retry pending. The in-memory bus
already makes `publish` wait for the handlers; what it does not wait for is a handler that
publishes in turn (it cannot wait on itself) and a retry scheduled after a failure, which is
what `wait_idle()` adds, without timers: it waits on a condition notified after every
delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from uuid import UUID

from eventsource.bus.in_memory import InMemoryBroker, InMemoryEventBus, InMemoryEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.stores.interface import EventPublisher, EventStore
from eventsource.testing.compare import (
    ExpectedEvent,
    assert_events_equal,
    describe_event,
    event_differences,
)

if TYPE_CHECKING:
    from eventsource.bus.in_memory import _Delivery

__all__ = [
    "PublishedEvents",
    "RecordingEventBus",
    "RecordingPublisher",
    "assert_event_published",
    "assert_nothing_published",
    "assert_stream",
]


@runtime_checkable
class PublishedEvents(Protocol):
    """Anything that keeps what was published, in order (`RecordingPublisher`,
    `RecordingEventBus`)."""

    @property
    def published(self) -> Sequence[DomainEvent]: ...


class RecordingPublisher:
    """An `EventPublisher` that records every event it is given (in `published`) and
    passes them on to `forward_to` when there is one."""

    def __init__(self, forward_to: EventPublisher | None = None) -> None:
        self.forward_to = forward_to
        self._recorded: list[DomainEvent] = []

    @property
    def published(self) -> Sequence[DomainEvent]:
        return tuple(self._recorded)

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        self._recorded.extend(events)
        if self.forward_to is not None:
            await self.forward_to.publish(events)

    def clear(self) -> None:
        self._recorded.clear()


class RecordingEventBus(InMemoryEventBus):
    """An `InMemoryEventBus` that records what was published through it (`published`) and
    can wait until it is idle (`await bus.wait_idle()`). Buses sharing one `broker` are
    consumer groups of one bus, as with `InMemoryEventBus`.

    Without a `config`, a failing handler is not retried (`max_attempts=1`): its message is
    dead-lettered at once (`await bus.dead_letters()`), so a test sees the failure without
    waiting out retry delays. Pass an `InMemoryEventBusConfig` to test retries.
    """

    def __init__(
        self,
        config: InMemoryEventBusConfig | None = None,
        *,
        broker: InMemoryBroker | None = None,
        registry: EventRegistry | None = None,
    ) -> None:
        config = config or InMemoryEventBusConfig(max_attempts=1, retry_delay=0.0)
        super().__init__(config, broker=broker, registry=registry)
        self._recorded: list[DomainEvent] = []
        self._retries_pending: set[int] = set()
        self._idle_changed: asyncio.Condition | None = None

    @property
    def published(self) -> Sequence[DomainEvent]:
        return tuple(self._recorded)

    def clear(self) -> None:
        """Forget what was recorded (the queues are not touched)."""
        self._recorded.clear()

    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        self._recorded.extend(events)
        await super()._publish(events)

    async def _deliver(self, delivery: _Delivery) -> None:
        # The base class schedules a retry by `call_later`: the delivery is then in neither
        # the queue nor in flight, so it is tracked here until it comes back.
        self._retries_pending.discard(id(delivery))
        attempt = delivery.attempt
        try:
            await super()._deliver(delivery)
        finally:
            if delivery.attempt > attempt:
                self._retries_pending.add(id(delivery))
        # The consumer clears its in-flight delivery right after this returns; waiters check
        # `idle` only once it has yielded again (in the queue's wait, or the next handler).
        await self._notify()

    async def _notify(self) -> None:
        progress = self._condition()
        async with progress:
            progress.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._idle_changed is None:
            self._idle_changed = asyncio.Condition()
        return self._idle_changed

    @property
    def idle(self) -> bool:
        """Nothing queued for this consumer, being handled or waiting for a retry (a bus
        that is not consuming is idle: its messages wait for a consumer, as on a broker)."""
        if not self.consuming:
            return True
        return not self._group.queue and self._in_flight is None and not self._retries_pending

    async def wait_idle(self) -> None:
        """Return once the bus is `idle`: every event published so far, and every event its
        handlers published in turn, has been handled or dead-lettered."""
        progress = self._condition()
        async with progress:
            await progress.wait_for(lambda: self.idle)


def _published(source: PublishedEvents) -> Sequence[DomainEvent]:
    if not isinstance(source, PublishedEvents):
        raise TypeError(
            f"{type(source).__qualname__} does not record what is published: use a "
            "RecordingEventBus or a RecordingPublisher (eventsource.testing)"
        )
    return source.published


def assert_event_published(
    source: PublishedEvents, expected: ExpectedEvent, *, times: int | None = None
) -> DomainEvent:
    """Assert that an event matching `expected` was published (exactly `times` times when
    given); returns the first match. The message of a failure lists what was published,
    with the differences of the closest event of the same class."""
    published = list(_published(source))
    matches = [event for event in published if not event_differences(expected, event)]
    if matches and (times is None or len(matches) == times):
        return matches[0]
    wanted = describe_event(expected, envelope=True)
    if matches:
        raise AssertionError(
            f"expected {wanted} to be published {times} time(s), it was {len(matches)} times"
        )
    lines = [f"expected {wanted} to be published; {len(published)} event(s) were:"]
    lines += [f"  {describe_event(event)}" for event in published] or ["  (none)"]
    same_class = [e for e in published if isinstance(expected, type) or type(e) is type(expected)]
    if same_class:
        lines.append(f"closest {type(same_class[0]).__name__} differs in:")
        lines += [f"  {line}" for line in event_differences(expected, same_class[0])]
    raise AssertionError("\n".join(lines))


def assert_nothing_published(source: PublishedEvents) -> None:
    """Assert that nothing was published."""
    assert_events_equal(_published(source), (), what="the events published")


async def assert_stream(
    store: EventStore, aggregate_id: UUID, expected: Sequence[ExpectedEvent]
) -> None:
    """Assert that the store's stream `aggregate_id` holds exactly these events, in order
    (compared as `assert_events_equal` does)."""
    stored = [stored async for stored in store.read_stream(aggregate_id)]
    assert_events_equal(stored, expected, what=f"the events of stream {aggregate_id}")
