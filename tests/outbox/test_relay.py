"""`OutboxRelay` end to end on every store with `outbox=True`: appends reach the bus in
per-aggregate order, a relay that dies between publish and mark publishes again and the
inbox drops the duplicate, a broker outage is retried, and several relays share the work."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from eventsource import EventStore, InMemoryEventStore
from eventsource.bus import InMemoryEventBus
from eventsource.events.base import DomainEvent
from eventsource.exceptions import BusConnectionError, OptimisticLockError
from eventsource.outbox import (
    InboxHandler,
    InboxRepository,
    InMemoryInboxRepository,
    InMemoryOutboxRepository,
    OutboxEntry,
    OutboxRelay,
    OutboxRepository,
)
from eventsource.testing import contract_registry
from eventsource.testing.bus import eventually
from eventsource.testing.events import ItemAdded, UnregisteredEvent
from tests._stores import OUTBOX_STORE_KINDS


@dataclass
class Setup:
    store: EventStore
    outboxes: list[OutboxRepository]
    """Several repositories on the same outbox, as several relay processes would have."""
    inbox: InboxRepository


@pytest.fixture(params=OUTBOX_STORE_KINDS)
async def setup(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Setup]:
    kind = request.param
    if kind == "memory":
        outbox = InMemoryOutboxRepository()
        yield Setup(
            InMemoryEventStore(registry=contract_registry, outbox=outbox),
            [outbox] * 3,
            InMemoryInboxRepository(),
        )
    elif kind == "sqlite":
        from eventsource import SQLiteEventStore
        from eventsource.outbox import SQLiteInboxRepository, SQLiteOutboxRepository

        path = tmp_path / "events.db"
        store = SQLiteEventStore(path, registry=contract_registry, outbox=True)
        await store.connect()
        outboxes = [SQLiteOutboxRepository(path) for _ in range(3)]
        inbox = SQLiteInboxRepository(path)
        yield Setup(store, list(outboxes), inbox)
        for closing in (*outboxes, inbox, store):
            await closing.close()
    else:
        from eventsource import PostgreSQLEventStore
        from eventsource.outbox import PostgreSQLInboxRepository, PostgreSQLOutboxRepository

        url, schema = request.getfixturevalue("postgres_url"), f"es_t_{uuid4().hex[:12]}"
        pg_store = PostgreSQLEventStore.from_url(
            url, schema=schema, registry=contract_registry, outbox=True
        )
        await pg_store.create_schema()
        pg_outboxes = [PostgreSQLOutboxRepository.from_url(url, schema=schema) for _ in range(3)]
        pg_inbox = PostgreSQLInboxRepository.for_store(pg_store)
        yield Setup(pg_store, list(pg_outboxes), pg_inbox)
        for closing in (*pg_outboxes, pg_inbox):
            await closing.close()
        async with pg_store.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await pg_store.close()


class Received:
    """A consumer's effects: each event handled, per aggregate in arrival order."""

    def __init__(self) -> None:
        self.events: list[DomainEvent] = []

    def handle(self, event: DomainEvent) -> None:
        self.events.append(event)

    def versions(self) -> dict[UUID, list[int]]:
        by_cart: dict[UUID, list[int]] = {}
        for event in self.events:
            by_cart.setdefault(event.aggregate_id, []).append(event.aggregate_version)
        return by_cart


async def _append(store: EventStore, cart: UUID, first: int, count: int) -> None:
    events = [ItemAdded(name=f"item-{v}") for v in range(first, first + count)]
    await store.append_events(cart, "Cart", events, first - 1)


async def _drain(relay: OutboxRelay) -> None:
    while await relay.publish_pending():
        pass


async def test_appends_reach_the_bus_in_order_and_only_committed_ones(setup: Setup) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    bus.subscribe(ItemAdded, received)
    carts = [uuid4() for _ in range(3)]
    for first in (1, 4):
        for cart in carts:
            await _append(setup.store, cart, first, 3)
    with pytest.raises(OptimisticLockError):
        await _append(setup.store, carts[0], 2, 1)  # a conflict must queue nothing
    relay = OutboxRelay(setup.outboxes[0], bus, registry=contract_registry, batch_size=4)
    await _drain(relay)
    assert received.versions() == {cart: [1, 2, 3, 4, 5, 6] for cart in carts}
    assert relay.published == 18
    stats = await setup.outboxes[0].stats()
    assert (stats.pending, stats.published) == (0, 18)
    await bus.shutdown()


class _Killed(BaseException):
    """The relay process dies: nothing after this point runs."""


class DiesAfterPublishing:
    def __init__(self, bus: InMemoryEventBus) -> None:
        self.bus = bus

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await self.bus.publish(events)
        raise _Killed


async def test_a_relay_killed_before_marking_republishes_and_the_inbox_drops_it(
    setup: Setup,
) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    handler = InboxHandler(received, setup.inbox, "cart-report")
    bus.subscribe(ItemAdded, handler)
    cart = uuid4()
    await _append(setup.store, cart, 1, 5)
    doomed = OutboxRelay(setup.outboxes[0], DiesAfterPublishing(bus), registry=contract_registry)
    with pytest.raises(_Killed):
        await doomed.publish_pending()
    assert [e.aggregate_version for e in received.events] == [1, 2, 3, 4, 5]
    assert (await setup.outboxes[0].stats()).pending == 5  # published, never marked

    survivor = OutboxRelay(setup.outboxes[1], bus, registry=contract_registry)
    await _drain(survivor)
    assert (await setup.outboxes[1].stats()).pending == 0
    assert [e.aggregate_version for e in received.events] == [1, 2, 3, 4, 5]
    assert (handler.processed, handler.duplicates) == (5, 5)
    await bus.shutdown()


class FlakyBroker:
    """Refuses the first `failures` publishes, as a broker that is restarting would."""

    def __init__(self, bus: InMemoryEventBus, failures: int) -> None:
        self.bus = bus
        self.failures = failures

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        if self.failures:
            self.failures -= 1
            raise BusConnectionError("broker restarting")
        await self.bus.publish(events)


async def test_a_broker_outage_is_retried_with_backoff(setup: Setup) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    bus.subscribe(ItemAdded, received)
    cart = uuid4()
    await _append(setup.store, cart, 1, 3)
    relay = OutboxRelay(
        setup.outboxes[0],
        FlakyBroker(bus, failures=2),
        registry=contract_registry,
        retry_delay=0.05,
        poll_interval=0.02,
    )
    assert await relay.publish_pending() == 0
    assert (await setup.outboxes[0].stats()).failing == 3
    await relay.start()
    await eventually(lambda: len(received.events) >= 3, 10, "the retried publish")
    await relay.stop()
    assert relay.failures == 2
    assert [e.aggregate_version for e in received.events] == [1, 2, 3]
    await bus.shutdown()


class SlowBroker:
    """Takes a little while per publish, so relays overlap."""

    def __init__(self, bus: InMemoryEventBus) -> None:
        self.bus = bus

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        await asyncio.sleep(random.uniform(0, 0.01))
        await self.bus.publish(events)


async def test_several_relays_share_the_outbox_and_keep_each_aggregate_in_order(
    setup: Setup,
) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    bus.subscribe(ItemAdded, received)
    carts = [uuid4() for _ in range(12)]
    relays = [
        OutboxRelay(
            outbox, SlowBroker(bus), registry=contract_registry, batch_size=5, poll_interval=0.01
        )
        for outbox in setup.outboxes
    ]
    for relay in relays:
        await relay.start()

    async def writer(cart: UUID) -> None:
        version = 1
        while version <= 20:
            count = random.randint(1, 4)
            count = min(count, 21 - version)
            await _append(setup.store, cart, version, count)
            version += count
            await asyncio.sleep(random.uniform(0, 0.005))

    await asyncio.gather(*(writer(cart) for cart in carts))
    await eventually(lambda: len(received.events) >= 240, 60, "240 events")
    for relay in relays:
        await relay.stop()
    assert received.versions() == {cart: list(range(1, 21)) for cart in carts}
    assert sum(relay.published for relay in relays) == 240
    await bus.shutdown()


@pytest.mark.postgresql
async def test_postgresql_outbox_rows_commit_and_roll_back_with_the_callers_transaction(
    postgres_url: str, schema: str
) -> None:
    from eventsource import PostgreSQLEventStore
    from eventsource.outbox import PostgreSQLOutboxRepository

    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=contract_registry, outbox=True
    ) as store:
        await store.create_schema()
        outbox = PostgreSQLOutboxRepository.for_store(store)
        for commit in (False, True):
            async with store.engine.connect() as conn:
                transaction = await conn.begin()
                await store.using(conn).append_events(uuid4(), "Cart", [ItemAdded(name="pear")], 0)
                await (transaction.commit() if commit else transaction.rollback())
            assert (await outbox.stats()).pending == int(commit)
        await outbox.close()


class HeldBroker:
    """Holds each publish until the test releases it."""

    def __init__(self, bus: InMemoryEventBus) -> None:
        self.bus = bus
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        self.started.set()
        await self.release.wait()
        await self.bus.publish(events)


async def test_stop_lets_the_batch_in_hand_finish_and_be_marked(setup: Setup) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    bus.subscribe(ItemAdded, received)
    await _append(setup.store, uuid4(), 1, 2)
    broker = HeldBroker(bus)
    relay = OutboxRelay(setup.outboxes[0], broker, registry=contract_registry)
    await relay.start()
    await asyncio.wait_for(broker.started.wait(), 10)
    stopping = asyncio.create_task(relay.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "stop() must wait for the batch in hand"
    broker.release.set()
    await asyncio.wait_for(stopping, 10)
    assert len(received.events) == 2
    assert (await setup.outboxes[0].stats()).pending == 0
    await bus.shutdown()


@pytest.mark.postgresql
async def test_postgresql_relay_publishing_does_not_hold_back_the_global_feed(
    postgres_url: str, schema: str
) -> None:
    """The relay holds no transaction while it publishes: the feed is read below the oldest
    open transaction holding a transaction id, so a claim kept open through a slow publish
    would hide every event appended meanwhile from every reader."""
    from eventsource import PostgreSQLEventStore
    from eventsource.outbox import PostgreSQLOutboxRepository

    async with (
        PostgreSQLEventStore.from_url(
            postgres_url, schema=schema, registry=contract_registry, outbox=True
        ) as store,
        PostgreSQLEventStore.from_url(
            postgres_url, schema=schema, registry=contract_registry
        ) as reader,
    ):
        await store.create_schema()
        outbox = PostgreSQLOutboxRepository.for_store(store)
        await _append(store, uuid4(), 1, 2)
        bus = InMemoryEventBus(registry=contract_registry)
        broker = HeldBroker(bus)
        relay = OutboxRelay(outbox, broker, registry=contract_registry)
        publishing = asyncio.create_task(relay.publish_pending())
        try:
            await asyncio.wait_for(broker.started.wait(), 10)
            appended = await store.append_events(uuid4(), "Cart", [ItemAdded(name="late")], 0)
            target = appended.last_position
            assert target is not None
            seen = False
            for _ in range(500):  # up to ~10 s; a held-back feed never gets there
                if await reader.current_position() >= target:
                    seen = True
                    break
                await asyncio.sleep(0.02)
            assert seen, "an event appended during a publish stayed unreadable"
            assert not publishing.done(), "the publish must still be in progress"
            ids = [stored.event.event_id async for stored in reader.read_all()]
            assert appended.events[0].event_id in ids
        finally:
            broker.release.set()
            published = await publishing
        assert published == 2
        assert (await outbox.stats()).pending == 1
        await outbox.close()
        await bus.shutdown()


async def test_an_undecodable_event_holds_back_only_its_aggregate_across_relays(
    setup: Setup,
) -> None:
    bus = InMemoryEventBus(registry=contract_registry)
    received = Received()
    bus.subscribe(ItemAdded, received)
    carts = [uuid4() for _ in range(6)]
    poisoned = carts[0]
    for cart in carts:
        await _append(setup.store, cart, 1, 2)
    await setup.store.append_events(poisoned, "Cart", [UnregisteredEvent()], 2)
    for cart in carts:
        await _append(setup.store, cart, 3 + (cart == poisoned), 3)
    relays = [
        OutboxRelay(
            outbox,
            SlowBroker(bus),
            registry=contract_registry,
            batch_size=4,
            poll_interval=0.01,
            retry_delay=0.01,
            max_attempts=3,
        )
        for outbox in setup.outboxes
    ]
    for relay in relays:
        await relay.start()
    await eventually(lambda: len(received.events) >= 27, 30, "every other event")
    parked: list[OutboxEntry] = []
    for _ in range(1000):
        parked = await setup.outboxes[0].list_parked()
        if parked:
            break
        await asyncio.sleep(0.01)
    assert [entry.aggregate_id for entry in parked] == [poisoned]
    assert parked[0].attempts == 3
    assert sum(relay.parked for relay in relays) == 1
    assert received.versions()[poisoned] == [1, 2], "its later events wait behind it"
    assert await setup.outboxes[1].discard_parked(parked[0].id)
    await eventually(lambda: len(received.events) >= 30, 30, "the released events")
    for relay in relays:
        await relay.stop()
    versions = received.versions()
    assert versions.pop(poisoned) == [1, 2, 4, 5, 6]
    assert versions == {cart: [1, 2, 3, 4, 5] for cart in carts[1:]}
    stats = await setup.outboxes[0].stats()
    assert (stats.pending, stats.parked) == (0, 0)
    await bus.shutdown()
