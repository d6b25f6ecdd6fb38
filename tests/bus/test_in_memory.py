"""`InMemoryEventBus`: the bus contract with buses sharing one `InMemoryBroker`, then what
only the in-process bus promises (publish waits for handlers; a handler may publish)."""

from __future__ import annotations

from typing import Any

import pytest

from eventsource.bus import EventBus, InMemoryBroker, InMemoryEventBus, InMemoryEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.testing import EventBusContract, contract_registry
from eventsource.testing.events import CartCheckedOut, ItemAdded


class TestInMemoryEventBus(EventBusContract):
    @pytest.fixture(autouse=True)
    def _broker(self) -> None:
        self.broker = InMemoryBroker()

    async def create_bus(self, group: str, **settings: Any) -> EventBus:
        config = InMemoryEventBusConfig(consumer_group=group, auto_start=False, **settings)
        return InMemoryEventBus(config, broker=self.broker, registry=contract_registry)

    async def drop_connections(self, bus: EventBus) -> None:
        """An in-process bus has no connection to lose."""


async def test_publish_returns_after_the_handlers_ran() -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    seen: list[DomainEvent] = []
    bus.subscribe(ItemAdded, seen.append)
    event = ItemAdded(name="pear")
    await bus.publish([event])
    assert seen == [event]
    assert bus.consuming
    await bus.shutdown()
    assert not bus.consuming


async def test_a_handler_can_publish_without_waiting_on_itself() -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    checked_out: list[DomainEvent] = []

    async def check_out(event: DomainEvent) -> None:
        await bus.publish([CartCheckedOut().with_causation(event)])

    bus.subscribe(ItemAdded, check_out)
    bus.subscribe(CartCheckedOut, checked_out.append)
    cause = ItemAdded(name="pear")
    await bus.publish([cause])
    await bus.shutdown()
    assert [e.causation_id for e in checked_out] == [cause.event_id]


async def test_one_failing_handler_does_not_stop_the_others() -> None:
    bus = InMemoryEventBus(InMemoryEventBusConfig(max_attempts=1), registry=contract_registry)
    seen: list[DomainEvent] = []

    def broken(event: DomainEvent) -> None:
        raise ValueError("broken handler")

    bus.subscribe(ItemAdded, broken)
    bus.subscribe(ItemAdded, seen.append)
    event = ItemAdded(name="pear")
    await bus.publish([event])
    assert seen == [event]
    (letter,) = await bus.dead_letters()
    assert "ValueError: broken handler" in letter.error
    await bus.shutdown()
