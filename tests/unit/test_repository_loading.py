"""Fast loading: snapshots, the aggregate cache, single-flight loads, serialized commands.

The event stores here are real ones (in memory, SQLite, PostgreSQL); a counting subclass of the
in-memory store only adds a counter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    EventStore,
    InMemoryEventStore,
    OptimisticLockError,
    ReadOptions,
    StoredEvent,
    handles,
)
from eventsource.aggregates import AggregateCache, SnapshotPolicy
from eventsource.snapshots import InMemorySnapshotStore, Snapshot, SnapshotStore
from tests._stores import STORE_KINDS, open_event_store

registry = EventRegistry()


class Deposited(DomainEvent, registry=registry):
    amount: int


class Withdrawn(DomainEvent, registry=registry):
    amount: int


class Ledger(BaseModel):
    balance: int = 0
    entries: list[int] = []


class Account(DeclarativeAggregate[Ledger]):
    def deposit(self, amount: int) -> None:
        self.apply_event(Deposited(amount=amount))

    def withdraw(self, amount: int) -> None:
        self.apply_event(Withdrawn(amount=amount))

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount
        self.state.entries.append(event.amount)

    @handles(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.state.balance -= event.amount
        self.state.entries.append(-event.amount)


class LedgerV2(BaseModel):
    balance_cents: int = 0


class AccountV2(DeclarativeAggregate[LedgerV2]):
    """The same stream type with a reshaped state: old snapshots must not be used."""

    aggregate_type = "Account"
    schema_version = 2

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance_cents += event.amount * 100

    @handles(Withdrawn)
    def _withdrawn(self, event: Withdrawn) -> None:
        self.state.balance_cents -= event.amount * 100


class CountingStore(InMemoryEventStore):
    """The in-memory store, counting stream reads."""

    def __init__(self) -> None:
        super().__init__(registry=registry)
        self.stream_reads = 0

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        self.stream_reads += 1
        await asyncio.sleep(0.01)  # a read that takes a while, so loads overlap
        async for stored in super().read_stream(aggregate_id, options):
            yield stored


class BrokenSnapshots(InMemorySnapshotStore):
    async def save(self, snapshot: Snapshot) -> None:
        raise ConnectionError("snapshot storage is down")


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


async def _history(repo: AggregateRepository[Account], account: UUID, amounts: list[int]) -> None:
    for amount in amounts:
        if amount >= 0:
            await repo.execute(account, lambda a, x=amount: a.deposit(x), create=True)
        else:
            await repo.execute(account, lambda a, x=amount: a.withdraw(-x), create=True)


# -- snapshots -------------------------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(amounts=st.lists(st.integers(-50, 100), min_size=1, max_size=25), every=st.integers(1, 6))
async def test_snapshot_plus_tail_equals_full_replay(amounts: list[int], every: int) -> None:
    events = InMemoryEventStore(registry=registry)
    snapshots = InMemorySnapshotStore()
    with_snapshots = AggregateRepository(
        events, Account, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.every(every)
    )
    account = uuid4()
    await _history(with_snapshots, account, amounts)

    replayed = await AggregateRepository(events, Account).load(account)
    fast = AggregateRepository(events, Account, snapshot_store=snapshots)
    loaded = await fast.load(account)
    assert loaded.state == replayed.state
    assert loaded.version == replayed.version == len(amounts)
    snapshot = await snapshots.get(account)
    if len(amounts) >= every:
        assert snapshot is not None
        assert snapshot.version == len(amounts) // every * every
        assert fast.stats.snapshot_loads == 1
        assert fast.stats.events_replayed == len(amounts) - snapshot.version
    else:
        assert snapshot is None
        assert fast.stats.events_replayed == len(amounts)


async def test_snapshot_of_another_schema_version_falls_back_to_replay(
    store: EventStore,
) -> None:
    snapshots = InMemorySnapshotStore()
    v1 = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.every(2)
    )
    account = uuid4()
    await _history(v1, account, [10, 20, -5, 7])
    assert (await snapshots.get(account)) is not None

    v2 = AggregateRepository(store, AccountV2, snapshot_store=snapshots)
    loaded = await v2.load(account)
    assert loaded.state.balance_cents == 3200
    assert v2.stats.snapshots_ignored == 1
    assert v2.stats.snapshot_loads == 0
    assert v2.stats.events_replayed == 4


async def test_undecodable_snapshot_is_ignored_and_counted(store: EventStore) -> None:
    snapshots = InMemorySnapshotStore()
    repo = AggregateRepository(store, Account, snapshot_store=snapshots)
    account = uuid4()
    await _history(repo, account, [5, 6])
    for bad in ('{"balance": "lots"}', "not json", json.dumps([1, 2])):
        await snapshots.save(Snapshot(account, "Account", 2, 1, bad))
        reader = AggregateRepository(store, Account, snapshot_store=snapshots)
        loaded = await reader.load(account)
        assert loaded.state.balance == 11
        assert reader.stats.snapshots_ignored == 1


async def test_background_snapshots_are_awaited_on_close(store: EventStore) -> None:
    snapshots = InMemorySnapshotStore()
    account = uuid4()
    async with AggregateRepository(
        store,
        Account,
        snapshot_store=snapshots,
        snapshot_policy=SnapshotPolicy.every(1),
        snapshot_in_background=True,
    ) as repo:
        await _history(repo, account, [1, 2, 3])
    assert repo.stats.snapshots_taken == 3
    kept = await snapshots.get(account)
    assert kept is not None
    assert kept.version == 3
    assert json.loads(kept.state)["balance"] == 6


async def test_a_failing_snapshot_write_never_fails_the_command(store: EventStore) -> None:
    repo = AggregateRepository(
        store,
        Account,
        snapshot_store=BrokenSnapshots(),
        snapshot_policy=SnapshotPolicy.every(1),
    )
    account = uuid4()
    await _history(repo, account, [4, 4])
    assert repo.stats.snapshot_failures == 2
    assert (await repo.load(account)).state.balance == 8


async def test_manual_and_never_policies(store: EventStore) -> None:
    snapshots = InMemorySnapshotStore()
    manual = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.manual()
    )
    account = uuid4()
    await _history(manual, account, [1, 1, 1])
    assert await snapshots.get(account) is None
    await manual.snapshot(await manual.load(account))
    kept = await snapshots.get(account)
    assert kept is not None
    assert kept.version == 3

    never = AggregateRepository(
        store, Account, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.never()
    )
    await never.load(account)
    assert never.stats.snapshot_loads == 0
    assert never.stats.events_replayed == 3
    with pytest.raises(ValueError, match="snapshot_store"):
        AggregateRepository(store, Account, snapshot_policy=SnapshotPolicy.every(5))


# -- the cache ---------------------------------------------------------------------------------


async def test_cache_is_brought_up_to_date_by_another_writers_events(store: EventStore) -> None:
    cache = AggregateCache(max_size=10)
    cached = AggregateRepository(store, Account, cache=cache)
    elsewhere = AggregateRepository(store, Account)  # another process: no shared cache
    account = uuid4()
    await _history(cached, account, [10])
    assert (await cached.load(account)).state.balance == 10
    assert cached.stats.cache_hits == 1
    await _history(elsewhere, account, [5, -3])
    loaded = await cached.load(account)
    assert loaded.state.balance == 12
    assert loaded.version == 3
    assert cached.stats.cache_hits == 2
    # the cache now holds version 3: the next load replays nothing
    replayed_before = cached.stats.events_replayed
    assert (await cached.load(account)).version == 3
    assert cached.stats.events_replayed == replayed_before


async def test_loads_from_the_cache_are_independent_copies(store: EventStore) -> None:
    repo = AggregateRepository(store, Account, cache=AggregateCache())
    account = uuid4()
    await _history(repo, account, [1])
    first, second = await repo.load(account), await repo.load(account)
    first.deposit(100)  # not saved
    assert second.state.balance == 1
    assert (await repo.load(account)).state.balance == 1


def test_cache_is_bounded_and_keeps_the_newest_entry() -> None:
    from eventsource.aggregates.cache import CachedState

    cache = AggregateCache(max_size=2)
    a, b, c = uuid4(), uuid4(), uuid4()
    cache.put("T", a, CachedState(1, 1, "{}"))
    cache.put("T", b, CachedState(1, 1, "{}"))
    assert cache.get("T", a) is not None  # a is now the most recently used
    cache.put("T", c, CachedState(1, 1, "{}"))
    assert cache.get("T", b) is None
    assert len(cache) == 2
    cache.put("T", a, CachedState(5, 1, "{}"))
    cache.put("T", a, CachedState(3, 1, "{}"))  # older: ignored
    entry = cache.get("T", a)
    assert entry is not None
    assert entry.version == 5
    with pytest.raises(ValueError, match="max_size"):
        AggregateCache(0)


# -- single flight and serialized commands ---------------------------------------------------


async def test_concurrent_loads_of_one_aggregate_cost_one_read() -> None:
    store = CountingStore()
    repo = AggregateRepository(store, Account)
    account = uuid4()
    await _history(repo, account, [3, 4])
    store.stream_reads = 0
    loaded = await asyncio.gather(*(repo.load(account) for _ in range(20)))
    assert store.stream_reads == 1
    assert repo.stats.shared_loads == 19
    assert {a.state.balance for a in loaded} == {7}
    assert len({id(a) for a in loaded}) == 20  # every caller has its own aggregate
    loaded[0].deposit(1)
    assert loaded[1].state.balance == 7

    solo = AggregateRepository(store, Account, single_flight=False)
    store.stream_reads = 0
    await asyncio.gather(*(solo.load(account) for _ in range(5)))
    assert store.stream_reads == 5


async def test_failed_shared_load_fails_every_waiter() -> None:
    class Down(CountingStore):
        async def read_stream(
            self, aggregate_id: UUID, options: ReadOptions | None = None
        ) -> AsyncIterator[StoredEvent]:
            await asyncio.sleep(0.01)
            raise ConnectionError("store down")
            yield  # pragma: no cover

    repo = AggregateRepository(Down(), Account)
    outcomes = await asyncio.gather(
        *(repo.load(uuid4() if n == 0 else UUID(int=7)) for n in range(4)),
        return_exceptions=True,
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes)


async def test_fifty_concurrent_commands_on_one_aggregate_all_succeed_when_serialized(
    store: EventStore,
) -> None:
    account = uuid4()
    serial = AggregateRepository(
        store, Account, max_retries=0, serialize_commands=True, cache=AggregateCache()
    )
    await serial.execute(account, lambda a: a.deposit(0), create=True)
    await asyncio.gather(*(serial.execute(account, lambda a: a.deposit(1)) for _ in range(50)))
    loaded = await AggregateRepository(store, Account).load(account)
    assert loaded.state.balance == 50
    assert loaded.version == 51

    # The same burst without serialization and without retries: conflicts, as expected.
    racing = AggregateRepository(store, Account, max_retries=0)

    async def command() -> Any:
        async def slow_deposit(a: Account) -> None:
            await asyncio.sleep(0.001)
            a.deposit(1)

        return await racing.execute(account, slow_deposit)

    outcomes = await asyncio.gather(*(command() for _ in range(20)), return_exceptions=True)
    assert any(isinstance(o, OptimisticLockError) for o in outcomes)


async def test_snapshot_store_contract_is_the_one_used(store: EventStore) -> None:
    """A snapshot of another aggregate type under the same id is not used."""
    snapshots: SnapshotStore = InMemorySnapshotStore()
    account = uuid4()
    repo = AggregateRepository(store, Account, snapshot_store=snapshots)
    await _history(repo, account, [9])
    await snapshots.save(Snapshot(account, "Order", 1, 1, '{"balance": 999, "entries": []}'))
    loaded = await repo.load(account)
    assert loaded.state.balance == 9
    assert repo.stats.snapshot_loads == 0
