import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    AppendResult,
    DomainEvent,
    EventStore,
    InMemoryEventStore,
    OptimisticLockError,
    SQLiteEventStore,
)
from tests.unit.test_aggregates import WalletAggregate, registry


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param == "memory":
        yield InMemoryEventStore(registry=registry)
    else:
        async with SQLiteEventStore(tmp_path / "repo.db", registry=registry) as sqlite:
            yield sqlite


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[DomainEvent] = []

    async def publish(self, events: Sequence[DomainEvent]) -> None:
        self.published.extend(events)


async def test_save_load_round_trip_and_publish(store: EventStore) -> None:
    publisher = RecordingPublisher()
    repo = AggregateRepository(store, WalletAggregate, event_publisher=publisher)
    assert repo.aggregate_type == "WalletAggregate"
    wallet = repo.create_new(uuid4())
    wallet.open("ann")
    wallet.deposit(10)
    result = await repo.save(wallet)
    assert result is not None
    assert result.new_version == 2
    assert not wallet.has_uncommitted_events
    assert [e.event_id for e in publisher.published] == [e.event_id for e in result.events]
    assert await repo.save(wallet) is None  # nothing new

    loaded = await repo.load(wallet.aggregate_id)
    assert loaded.state == wallet.state
    assert loaded.version == 2
    assert await repo.exists(wallet.aggregate_id)


async def test_load_missing_and_load_or_create(store: EventStore) -> None:
    repo = AggregateRepository(store, WalletAggregate)
    missing = uuid4()
    with pytest.raises(AggregateNotFoundError, match=str(missing)):
        await repo.load(missing)
    assert not await repo.exists(missing)
    fresh = await repo.load_or_create(missing)
    assert fresh.version == 0


async def test_stale_save_is_refused(store: EventStore) -> None:
    repo = AggregateRepository(store, WalletAggregate)
    wallet = repo.create_new(uuid4())
    wallet.open("ann")
    await repo.save(wallet)
    first, second = await repo.load(wallet.aggregate_id), await repo.load(wallet.aggregate_id)
    first.deposit(1)
    await repo.save(first)
    second.deposit(2)
    with pytest.raises(OptimisticLockError):
        await repo.save(second)
    assert (await repo.load(wallet.aggregate_id)).state.balance == 1


async def test_concurrent_commands_all_land_through_retries(store: EventStore) -> None:
    # 20 writers on one stream: each may lose up to 19 rounds; allow that many retries.
    repo = AggregateRepository(store, WalletAggregate, max_retries=30)
    wallet_id = uuid4()
    await repo.execute(wallet_id, lambda w: w.open("ann"), create=True)

    async def deposit(wallet: WalletAggregate) -> int:
        await asyncio.sleep(0.001)  # widen the window between load and save
        wallet.deposit(1)
        return wallet.version

    conflicts = 0
    append = store.append_events

    async def counting_append(*args: Any, **kwargs: Any) -> AppendResult:
        nonlocal conflicts
        try:
            return await append(*args, **kwargs)
        except OptimisticLockError:
            conflicts += 1
            raise

    store.append_events = counting_append  # type: ignore[method-assign]
    results = await asyncio.gather(*(repo.execute(wallet_id, deposit) for _ in range(20)))
    assert conflicts > 0  # the writers really collided; the retries resolved it
    final = await repo.load(wallet_id)
    assert final.state.balance == 20
    assert final.version == 21
    assert sorted(results) == list(range(2, 22))


async def test_retries_are_bounded(store: EventStore) -> None:
    repo = AggregateRepository(store, WalletAggregate, max_retries=2)
    wallet_id = uuid4()
    await repo.execute(wallet_id, lambda w: w.open("ann"), create=True)
    attempts = 0

    async def always_conflicting(wallet: WalletAggregate) -> None:
        nonlocal attempts
        attempts += 1
        interloper = await repo.load(wallet_id)
        interloper.deposit(1)
        await repo.save(interloper)
        wallet.deposit(1)

    with pytest.raises(OptimisticLockError):
        await repo.execute(wallet_id, always_conflicting)
    assert attempts == 3


async def test_execute_without_create_needs_an_existing_aggregate(store: EventStore) -> None:
    repo = AggregateRepository(store, WalletAggregate)
    with pytest.raises(AggregateNotFoundError):
        await repo.execute(uuid4(), lambda w: w.deposit(1))


async def test_aggregate_of_another_type_is_not_loaded(store: EventStore) -> None:
    wallets = AggregateRepository(store, WalletAggregate)
    others = AggregateRepository(store, WalletAggregate, aggregate_type="Purse")
    wallet = wallets.create_new(uuid4())
    wallet.open("ann")
    await wallets.save(wallet)
    with pytest.raises(AggregateNotFoundError):
        await others.load(wallet.aggregate_id)


def test_constructor_validation() -> None:
    store = InMemoryEventStore()
    with pytest.raises(TypeError, match="aggregate_type"):
        AggregateRepository(store, lambda aggregate_id: WalletAggregate(aggregate_id))
    with pytest.raises(ValueError, match="max_retries"):
        AggregateRepository(store, WalletAggregate, max_retries=-1)


async def test_an_event_bus_publishes_what_the_repository_saved(store: EventStore) -> None:
    from eventsource import InMemoryEventBus

    bus = InMemoryEventBus(registry=registry)
    seen: list[DomainEvent] = []
    bus.subscribe_to_all_events(seen.append)
    repo = AggregateRepository(store, WalletAggregate, event_publisher=bus)
    wallet = repo.create_new(uuid4())
    wallet.open("ann")
    wallet.deposit(10)
    result = await repo.save(wallet)
    assert result is not None
    assert seen == list(result.events)  # decoded from the wire, equal to what was stored
    await bus.shutdown()
