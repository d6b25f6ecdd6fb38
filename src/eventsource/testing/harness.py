"""`Harness`: an application's event-sourced parts wired in memory, run to quiescence.

A test of more than one aggregate wants the whole loop: commands saved through repositories,
events published to bus handlers, projections fed by subscriptions. The harness wires an
event store (in memory unless given one), a `RecordingEventBus` the repositories publish to,
and a `SubscriptionManager` with in-memory checkpoints and dead letters, and runs them.

`await harness.settle()` returns when everything that was set in motion has finished, with
no sleep and no polling: it reads the store's head, waits (on the subscriptions' progress
conditions) until every subscription has processed up to it, waits until every bus of the
harness is idle (`RecordingEventBus.wait_idle`), and goes round again until the head did not
move, since handlers may run commands that append and publish more.

Failures do not hide: the harness's subscriptions and buses try a failing handler once
(`max_attempts=1`, no circuit breaker, so no backoff sleeps) and dead-letter it, and
`settle()` raises `AssertionError` naming each new dead letter with its error (pass
`fail_on_dead_letters=False` to test dead-lettering itself).

Time: the library reads the wall clock (`eventsource._internal.clock.utc_now`) where it
stamps events and records, and offers no injectable clock, so the harness does not pretend to
control it; give events explicit times with `EventBuilder` where a test depends on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self, TypeVar
from uuid import UUID

from eventsource._internal.closing import AsyncClosing
from eventsource.aggregates.base import AggregateRoot
from eventsource.aggregates.repository import AggregateRepository
from eventsource.bus.in_memory import InMemoryBroker, InMemoryEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.projections.base import Projection
from eventsource.repositories.in_memory import InMemoryCheckpointRepository, InMemoryDLQRepository
from eventsource.stores.in_memory import InMemoryEventStore
from eventsource.stores.interface import AppendResult, EventStore, ExpectedVersion, Position
from eventsource.subscriptions.interface import EventCallback, SubscriptionConfig
from eventsource.subscriptions.manager import SubscriptionManager
from eventsource.subscriptions.subscription import Subscription
from eventsource.testing.builder import EventBuilder
from eventsource.testing.recording import RecordingEventBus

__all__ = ["Harness"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]

SETTLE_TIMEOUT = 30.0
"""Seconds after which `settle()` gives up: a guard against a hung test, never a wait."""


class Harness(AsyncClosing):
    """An event store, a recording bus and subscriptions, wired and started together.

    Use it as `async with Harness() as harness:`; `repository(Aggregate)` gives repositories
    that publish to `harness.bus`, `subscribe(projection)` runs a projection from the store,
    `harness.bus.subscribe(EventClass, handler)` adds bus handlers, and `settle()` waits for
    all of it. A `store` passed in is used (and closed by the caller); by default the harness
    owns an `InMemoryEventStore`.
    """

    def __init__(
        self,
        *,
        store: EventStore | None = None,
        bus: RecordingEventBus | None = None,
        registry: EventRegistry | None = None,
        subscription_config: SubscriptionConfig | None = None,
        fail_on_dead_letters: bool = True,
    ) -> None:
        self._owns_store = store is None
        self.store: EventStore = store or InMemoryEventStore(registry=registry)
        self._registry = registry
        self.broker = bus.broker if bus is not None else InMemoryBroker()
        self.bus = bus or self._new_bus("default")
        self.checkpoints = InMemoryCheckpointRepository(self.store)
        self.dead_letters = InMemoryDLQRepository(self.store)
        self.subscriptions = SubscriptionManager(
            self.store,
            self.checkpoints,
            self.dead_letters,
            config=subscription_config or SubscriptionConfig(max_attempts=1, circuit_breaker=None),
        )
        self.fail_on_dead_letters = fail_on_dead_letters
        self._buses = [self.bus]
        self._reported: set[object] = set()
        self._started = False

    def _new_bus(self, group: str) -> RecordingEventBus:
        config = InMemoryEventBusConfig(
            consumer_group=group, consumer_name=f"harness-{group}", max_attempts=1, retry_delay=0
        )
        return RecordingEventBus(config, broker=self.broker, registry=self._registry)

    # -- wiring ------------------------------------------------------------------------------

    def repository(
        self, aggregate_class: Callable[[UUID], TAggregate], **options: Any
    ) -> AggregateRepository[TAggregate]:
        """An `AggregateRepository` on the harness's store that publishes what it saves to
        `harness.bus`; `options` are the repository's keyword options."""
        options.setdefault("event_publisher", self.bus)
        return AggregateRepository(self.store, aggregate_class, **options)

    def subscribe(
        self,
        handler: Projection | EventCallback,
        *,
        name: str | None = None,
        config: SubscriptionConfig | None = None,
    ) -> Subscription:
        """Run a projection (or an `async def handler(stored_event)` with a `name`) from the
        store's feed, from the beginning; started at once when the harness runs."""
        return self.subscriptions.subscribe(handler, name=name, config=config)

    def consumer(self, group: str) -> RecordingEventBus:
        """Another consumer group on the harness's broker (a second service listening to the
        same events), queueing from now on; it consumes from `start()` (or the next
        `settle()`, when the harness runs already), and `settle()` waits for it too."""
        bus = self._new_bus(group)
        self._buses.append(bus)
        return bus

    async def append(self, *events: DomainEvent, publish: bool = True) -> list[AppendResult]:
        """Append events as they come, each to its own stream (bare events, without an
        aggregate id, to one new stream: see `EventBuilder`), and publish them to the bus
        as a repository would. For a given that does not go through a command."""
        builder = EventBuilder()
        results: list[AppendResult] = []
        for event in events:
            stamped = event if event.is_attached else builder.event(event)
            result = await self.store.append_events(
                stamped.aggregate_id, stamped.aggregate_type, [stamped], ExpectedVersion.ANY
            )
            results.append(result)
            if publish:
                await self.bus.publish(result.events)
        return results

    # -- running -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the subscriptions and the buses' consumers (`async with` does it)."""
        if self._started:
            return
        self._started = True
        await self.subscriptions.start()
        for bus in self._buses:
            await bus.start_consuming()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def settle(self, *, timeout: float = SETTLE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Wait until every subscription has processed the store's head and every bus is
        idle, again until nothing moves; then raise `AssertionError` for new dead letters
        (with `fail_on_dead_letters`). `timeout` only guards against a hang: it raises
        `AssertionError` with each subscription's state."""
        if not self._started:
            await self.start()
        for bus in self._buses:
            if not bus.consuming:
                await bus.start_consuming()
        try:
            async with asyncio.timeout(timeout):
                await self._settle()
        except TimeoutError:
            raise AssertionError(
                f"the harness did not settle within {timeout}s:\n{await self._report()}"
            ) from None
        if self.fail_on_dead_letters:
            await self._raise_for_dead_letters()

    async def _settle(self) -> None:
        while True:
            head = await self.store.current_position()
            if head != Position.START:
                for subscription in self.subscriptions.subscriptions:
                    subscription.wake()
                    await subscription.wait_for(head)
            for bus in self._buses:
                await bus.wait_idle()
            if await self.store.current_position() == head and all(b.idle for b in self._buses):
                return

    async def _report(self) -> str:
        head = await self.store.current_position()
        lines = [f"  store head: {head}"]
        for subscription in self.subscriptions.subscriptions:
            health = subscription.health_at(head)
            lines.append(
                f"  subscription {health.name}: {health.state.value} at {health.position}, "
                f"last error: {health.last_error}"
            )
        lines += [f"  bus group {b.config.consumer_group}: idle={b.idle}" for b in self._buses]
        return "\n".join(lines)

    async def _raise_for_dead_letters(self) -> None:
        found: list[str] = []
        for letter in await self.dead_letters.list(limit=1000):
            if letter.id not in self._reported:
                self._reported.add(letter.id)
                found.append(
                    f"  subscription {letter.subscription}: {letter.event_type} "
                    f"{letter.event_id}: {letter.error}"
                )
        for bus in self._buses:
            for bus_letter in await bus.dead_letters(limit=1000):
                key = (bus_letter.consumer_group, bus_letter.event_id, bus_letter.failed_at)
                if key not in self._reported:
                    self._reported.add(key)
                    found.append(
                        f"  bus group {bus_letter.consumer_group}: {bus_letter.event_type} "
                        f"{bus_letter.event_id}: {bus_letter.error}"
                    )
        if found:
            raise AssertionError(
                "handlers failed while the harness settled (dead-lettered; pass "
                "fail_on_dead_letters=False to expect this):\n" + "\n".join(found)
            )

    async def close(self) -> None:
        """Stop the subscriptions and buses; close the store when the harness made it."""
        await self.subscriptions.stop()
        for bus in self._buses:
            await bus.close()
        if self._owns_store:
            await self.store.close()
