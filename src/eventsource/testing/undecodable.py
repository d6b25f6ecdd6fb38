"""`UndecodableEventContract`: stored events a reader cannot decode, on every backend.

An event of a type the reading process does not register (a newer service wrote it), a
corrupt payload, or an upcaster that fails must not halt the feed: `read_all` passes it until
its `event` is read, a subscription retries it and parks it in the dead-letter queue with its
raw row (or stops in state FAILED with `on_undecodable="stop"`), a subscription that skips
the type never decodes it, and direct readers raise the typed error when they decode it.

A backend's test module subclasses it and supplies the store, the subscription repositories
of the same backend, and a way to damage a stored payload::

    class TestMyBackendUndecodable(UndecodableEventContract):
        async def create_store(self, registry: EventRegistry) -> EventStore: ...
        async def create_checkpoints(self) -> CheckpointRepository: ...
        async def create_dead_letters(self) -> DLQRepository: ...
        async def corrupt_event(self, store: EventStore, event_id: UUID) -> None: ...
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from eventsource.aggregates.base import DeclarativeAggregate
from eventsource.aggregates.repository import AggregateRepository
from eventsource.events.base import DomainEvent
from eventsource.events.handlers import handles
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import EventTypeNotFoundError, SerializationError, UpcastingError
from eventsource.projections.base import DeclarativeProjection
from eventsource.protocols import DeadLetterStatus
from eventsource.repositories.interface import CheckpointRepository, DeadLetter, DLQRepository
from eventsource.stores.interface import EventStore, Position, ReadOptions, StoredEvent
from eventsource.subscriptions.interface import (
    CircuitBreaker,
    SubscriptionConfig,
    SubscriptionState,
)
from eventsource.subscriptions.manager import SubscriptionManager
from eventsource.subscriptions.subscription import Subscription
from eventsource.testing.events import (
    ItemAdded,
    ProfileCreated,
    ProfileCreatedV1,
    UnregisteredEvent,
)
from eventsource.testing.telemetry import capture_telemetry

__all__ = ["UndecodableEventContract"]

CART = "Cart"
_WAIT = 30.0
"""Upper bound on waiting for a subscription (a hang fails the test instead of blocking)."""
_FAST = SubscriptionConfig(
    batch_size=5,
    poll_interval=0.05,
    retry_base=0.001,
    retry_cap=0.01,
    # Undecodable events never open the circuit: if they did, the first one would hold the
    # subscription for longer than any test waits.
    circuit_breaker=CircuitBreaker(failures=1, cooldown=_WAIT * 10),
)


class _CartState(BaseModel):
    items: int = 0


class _Cart(DeclarativeAggregate[_CartState]):
    aggregate_type = CART

    @handles(ItemAdded)
    def _added(self, event: ItemAdded) -> None:
        self.state.items += event.quantity


class _Items(DeclarativeProjection):
    """Handles `ItemAdded` only: the feed it reads is filtered to that type."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @handles(ItemAdded)
    def _added(self, event: ItemAdded) -> None:
        self.names.append(event.name)


@dataclass
class _Everything:
    """An unfiltered handler that reads every event (so it decodes every event)."""

    names: list[str]

    async def __call__(self, stored: StoredEvent) -> None:
        event = stored.event
        self.names.append(getattr(event, "name", event.event_type))


def _registry() -> EventRegistry:
    """What this process knows: `ItemAdded` and `ProfileCreated`, not `UnregisteredEvent`."""
    registry = EventRegistry()
    registry.register(ItemAdded)
    registry.register(ProfileCreated)
    return registry


def _failing_upcaster(data: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"cannot upcast {data.get('name')!r}")


class UndecodableEventContract(ABC):
    """Abstract pytest suite; subclasses implement the four hooks below."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_store(self, registry: EventRegistry) -> EventStore:
        """A new, empty store decoding through `registry`."""

    @abstractmethod
    async def create_checkpoints(self) -> CheckpointRepository:
        """An empty checkpoint repository of the store's backend."""

    @abstractmethod
    async def create_dead_letters(self) -> DLQRepository:
        """An empty dead-letter repository of the store's backend."""

    @abstractmethod
    async def corrupt_event(self, store: EventStore, event_id: UUID) -> None:
        """Overwrite the stored payload of `event_id` with one its class cannot read (not
        JSON where the backend allows that, else JSON of the wrong shape)."""

    @pytest.fixture
    async def registry(self) -> EventRegistry:
        return _registry()

    @pytest.fixture
    async def store(self, registry: EventRegistry) -> AsyncIterator[EventStore]:
        store = await self.create_store(registry)
        try:
            yield store
        finally:
            await store.close()

    @pytest.fixture
    async def manager(self, store: EventStore) -> AsyncIterator[SubscriptionManager]:
        checkpoints = await self.create_checkpoints()
        dead_letters = await self.create_dead_letters()
        manager = SubscriptionManager(store, checkpoints, dead_letters, config=_FAST)
        try:
            yield manager
        finally:
            await manager.stop()
            await checkpoints.close()
            await dead_letters.close()

    async def _poisoned_feed(
        self, store: EventStore, aggregate_id: UUID | None = None
    ) -> tuple[list[DomainEvent], Position]:
        """a, an event of an unregistered type, b; returns the events and the last position."""
        events: list[DomainEvent] = [
            ItemAdded(name="a"),
            UnregisteredEvent(note="written by a newer service"),
            ItemAdded(name="b"),
        ]
        result = await store.append_events(aggregate_id or uuid4(), CART, events, 0)
        assert result.last_position is not None
        return list(result.events), result.last_position

    # -- direct readers ---------------------------------------------------------------------

    async def test_read_all_passes_an_undecodable_event_until_it_is_read(
        self, store: EventStore
    ) -> None:
        events, _ = await self._poisoned_feed(store)
        read = [stored async for stored in store.read_all()]
        assert [s.event_id for s in read] == [e.event_id for e in events]
        poison = read[1]
        assert not poison.decoded
        assert (poison.event_type, poison.version, poison.aggregate_type) == (
            "UnregisteredEvent",
            2,
            CART,
        )
        assert poison.aggregate_id == events[1].aggregate_id
        assert json.loads(poison.payload)["note"] == "written by a newer service"
        with pytest.raises(EventTypeNotFoundError) as caught:
            poison.event  # noqa: B018 - reading it decodes it
        assert caught.value.event_type == "UnregisteredEvent"
        assert isinstance(poison.decode_error(), EventTypeNotFoundError)
        assert [read[0].event, read[2].event] == [events[0], events[2]]

    async def test_direct_readers_raise_when_they_decode_it(self, store: EventStore) -> None:
        events, _ = await self._poisoned_feed(store)
        stream = events[0].aggregate_id
        with pytest.raises(EventTypeNotFoundError):
            await store.get_events(stream)
        with pytest.raises(EventTypeNotFoundError):
            await AggregateRepository(store, _Cart).load(stream)
        with pytest.raises(EventTypeNotFoundError):
            [list(page) async for page in store.read_stream_events(stream)]
        found = await store.get_event(events[1].event_id)
        with pytest.raises(EventTypeNotFoundError):
            found.event  # noqa: B018
        in_stream = [s async for s in store.read_stream(stream)]
        assert [s.version for s in in_stream] == [1, 2, 3]
        # Readers that skip the type by a filter never meet it.
        kept = ReadOptions(event_types={"ItemAdded"})
        assert [s.event async for s in store.read_all(kept)] == [events[0], events[2]]
        # A corrupt row fails the load with the typed error too, not a pydantic one.
        await self.corrupt_event(store, events[2].event_id)
        first_only = ReadOptions(to_version=1)
        [first] = [
            event async for page in store.read_stream_events(stream, first_only) for event in page
        ]
        assert first == events[0]
        with pytest.raises(SerializationError, match="ItemAdded"):
            [
                list(page)
                async for page in store.read_stream_events(stream, ReadOptions(from_version=3))
            ]

    async def test_a_corrupt_payload_fails_only_where_it_is_decoded(
        self, store: EventStore
    ) -> None:
        events, _ = await self._poisoned_feed(store)
        await self.corrupt_event(store, events[2].event_id)
        read = [stored async for stored in store.read_all()]
        with pytest.raises(SerializationError, match="ItemAdded"):
            read[2].event  # noqa: B018
        assert read[0].event == events[0]
        # Its ids come from the store even when the payload cannot tell them.
        await store.load_envelope(read[2])
        assert read[2].envelope_complete
        assert (read[2].event_id, read[2].aggregate_id, read[2].aggregate_type) == (
            events[2].event_id,
            events[2].aggregate_id,
            CART,
        )

    # -- subscriptions --------------------------------------------------------------------

    async def test_exactly_one_partition_parks_a_corrupt_event(
        self, store: EventStore, manager: SubscriptionManager
    ) -> None:
        # Partition 2 of 3: the partition of the aggregate, which a store that reads the id
        # from its column knows even when the payload cannot be decoded.
        aggregate = UUID(int=3 * 0x5EED + 2)
        events, last = await self._poisoned_feed(store, aggregate)
        await self.corrupt_event(store, events[2].event_id)
        handler = _Everything([])
        partitions = manager.subscribe_partitioned(handler, 3, name="parts")
        await manager.start()
        for subscription in partitions:
            await subscription.wait_for(last, timeout=_WAIT)
            assert subscription.state is not SubscriptionState.FAILED
        assert handler.names == ["a"]
        letters = {p.name: await self._letters(manager, p.name) for p in partitions}
        owner = partitions[2].name
        assert sorted(letter.event_id for letter in letters[owner]) == sorted(
            [events[1].event_id, events[2].event_id]
        )
        assert [name for name, found in letters.items() if found] == [owner]
        # Its partition admits the retries (refused, they would raise NotAdmittedError); they
        # fail again, the events still cannot be decoded.
        for letter in letters[owner]:
            assert await manager.retry_dead_letter(letter.id) is False

    async def _letters(self, manager: SubscriptionManager, name: str) -> list[DeadLetter]:
        dead_letters = manager.dead_letters
        assert isinstance(dead_letters, DLQRepository)
        return await dead_letters.list(name, status=None)

    async def test_a_subscription_parks_undecodable_events_and_moves_on(
        self, store: EventStore, manager: SubscriptionManager, registry: EventRegistry
    ) -> None:
        """Unknown type, corrupt payload and failing upcaster: each is retried, parked with
        its raw row, and the events after it are delivered."""
        registry.register_upcaster(ProfileCreated, 1, _failing_upcaster)
        events, _ = await self._poisoned_feed(store)
        corrupt = ItemAdded(name="corrupt")
        old = ProfileCreatedV1(name="Ada Lovelace")
        more = await store.append_events(uuid4(), CART, [corrupt, old, ItemAdded(name="c")], 0)
        await self.corrupt_event(store, corrupt.event_id)
        raw = {}
        async for stored in store.read_all():
            await store.load_envelope(stored)
            raw[stored.event_id] = stored.payload
        assert more.last_position is not None

        handler = _Everything([])
        subscription = manager.subscribe(handler, name="everything")
        await manager.start()
        await subscription.wait_for(more.last_position, timeout=_WAIT)

        assert handler.names == ["a", "b", "c"]
        assert subscription.state is not SubscriptionState.FAILED
        letters = {letter.event_id: letter for letter in await self._letters(manager, "everything")}
        assert set(letters) == {events[1].event_id, corrupt.event_id, old.event_id}
        unknown = letters[events[1].event_id]
        assert unknown.undecodable
        assert unknown.error.startswith("EventTypeNotFoundError: ")
        assert unknown.attempts == _FAST.max_attempts
        assert (unknown.event_type, unknown.aggregate_type, unknown.aggregate_version) == (
            "UnregisteredEvent",
            CART,
            2,
        )
        assert json.loads(unknown.payload) == json.loads(raw[events[1].event_id])
        broken = letters[corrupt.event_id]
        assert broken.undecodable
        assert broken.payload == raw[corrupt.event_id]
        assert broken.error.startswith("SerializationError: ")
        upcast = letters[old.event_id]
        assert upcast.error.startswith(f"{UpcastingError.__qualname__}: ")
        assert upcast.event_version == 1
        assert subscription.dead_lettered == 3

        # Once this process knows the type, the dead letter can be retried from the store.
        registry.register(UnregisteredEvent)
        assert await manager.retry_dead_letter(unknown.id)
        assert handler.names[-1] == "UnregisteredEvent"
        resolved = await self._letters(manager, "everything")
        assert {ltr.event_id for ltr in resolved if ltr.status is DeadLetterStatus.RESOLVED} == {
            events[1].event_id
        }

    async def test_strict_mode_stops_failed_at_the_undecodable_event(
        self, store: EventStore, manager: SubscriptionManager
    ) -> None:
        events, _ = await self._poisoned_feed(store)
        first, poison, _ = [s async for s in store.read_all()]
        handler = _Everything([])
        strict = SubscriptionConfig(
            batch_size=5, poll_interval=0.05, retry_base=0.001, on_undecodable="stop"
        )
        subscription = manager.subscribe(handler, name="strict", config=strict)
        await manager.start()
        await _until_stopped(subscription)

        assert subscription.state is SubscriptionState.FAILED
        assert subscription.last_error is not None
        assert "UnregisteredEvent" in subscription.last_error
        assert str(poison.position) in subscription.last_error
        assert handler.names == ["a"]
        assert subscription.position == first.position
        checkpoint = await manager.checkpoints.get("strict")
        assert checkpoint is not None
        assert checkpoint.position == first.position
        assert await self._letters(manager, "strict") == []
        assert not (await manager.health()).healthy
        assert [e.event_id for e in events][1] == poison.event_id

    async def test_subscriptions_that_skip_the_type_never_decode_it(
        self, store: EventStore, manager: SubscriptionManager
    ) -> None:
        """A projection without a handler for the type, and a handler that skips it by its
        envelope: strict mode proves nothing tried to decode it."""
        _, last = await self._poisoned_feed(store)
        strict = SubscriptionConfig(batch_size=5, poll_interval=0.05, on_undecodable="stop")
        projection = _Items()
        skipped: list[str] = []

        async def by_envelope(stored: StoredEvent) -> None:
            if stored.event_type == "ItemAdded":
                skipped.append(stored.event.name)  # type: ignore[attr-defined]

        subscriptions = [
            manager.subscribe(projection, config=strict),
            manager.subscribe(by_envelope, name="by-envelope", config=strict),
        ]
        with capture_telemetry() as captured:  # a span per delivery, traced or not
            await manager.start()
            for subscription in subscriptions:
                await subscription.wait_for(last, timeout=_WAIT)
                assert subscription.state is not SubscriptionState.FAILED
                assert subscription.last_error is None
        assert projection.names == skipped == ["a", "b"]
        assert len(captured.spans("project by-envelope")) == 3
        assert await self._letters(manager, projection.name) == []


async def _until_stopped(subscription: Subscription) -> None:
    """Wait (bounded) until the subscription's task ends."""
    ended = (SubscriptionState.FAILED, SubscriptionState.STOPPED)
    async with asyncio.timeout(_WAIT):
        while subscription.state not in ended:  # noqa: ASYNC110 - the loop sets no event
            await asyncio.sleep(0.01)
