"""The sync facades against real stores (in memory, SQLite, PostgreSQL): every call from plain
threads, many of them at once, on one store whose connections live on the adapter's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    DeclarativeAggregate,
    DomainEvent,
    EventNotFoundError,
    EventRegistry,
    EventStore,
    ExpectedVersion,
    InMemoryEventStore,
    OptimisticLockError,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
    handles,
)
from eventsource.sync import SyncAdapterError, SyncAggregateRepository, SyncEventStoreAdapter
from tests._stores import STORE_KINDS

registry = EventRegistry()
T = TypeVar("T")


class Deposited(DomainEvent, registry=registry):
    amount: int


class Ledger(BaseModel):
    balance: int = 0


class Account(DeclarativeAggregate[Ledger]):
    def deposit(self, amount: int) -> None:
        self.apply_event(Deposited(amount=amount))

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount


class ClosingStore(InMemoryEventStore):
    """The in-memory store, recording that it was closed (and on which thread) and how many
    stream reads are still open."""

    def __init__(self) -> None:
        super().__init__(registry=registry)
        self.closed_on: str | None = None
        self.open_reads = 0

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        self.open_reads += 1
        try:
            async for stored in super().read_stream(aggregate_id, options):
                yield stored
        finally:
            self.open_reads -= 1

    async def close(self) -> None:
        self.closed_on = threading.current_thread().name


def _open_store(request: pytest.FixtureRequest, tmp_path: Path) -> EventStore:
    if request.param == "memory":
        return InMemoryEventStore(registry=registry)
    if request.param == "sqlite":
        from eventsource import SQLiteEventStore

        return SQLiteEventStore(tmp_path / "events.db", registry=registry)
    if request.param == "nats":
        import asyncio

        from eventsource import NATSEventStore
        from tests._nats import delete_streams, unique_name

        url, name = request.getfixturevalue("nats_url"), unique_name("sync")
        request.addfinalizer(lambda: asyncio.run(delete_streams(url, name)))
        return NATSEventStore(url, stream=name, registry=registry)
    from eventsource import PostgreSQLEventStore

    return PostgreSQLEventStore.from_url(
        request.getfixturevalue("postgres_url"),
        schema=request.getfixturevalue("schema"),
        registry=registry,
    )


@pytest.fixture(params=STORE_KINDS)
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncEventStoreAdapter[Any]]:
    """A sync adapter over an empty store; PostgreSQL's schema is created through it."""
    store = _open_store(request, tmp_path)
    with SyncEventStoreAdapter(store) as opened:
        create_schema = getattr(store, "create_schema", None)
        if create_schema is not None:
            opened.call(create_schema)
        yield opened


def _deposits(*amounts: int) -> list[DomainEvent]:
    return [Deposited(amount=amount) for amount in amounts]


def _in_threads(workers: int, job: Callable[[int], T]) -> list[T]:
    """Run `job(i)` in `workers` threads released together by a barrier."""
    barrier = threading.Barrier(workers)

    def run(i: int) -> T:
        barrier.wait()
        return job(i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, range(workers)))


# -- the store interface ---------------------------------------------------------------------


def test_every_store_method_blocks_and_returns_the_store_answer(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    stream = uuid4()
    result = adapter.append_events(stream, "Account", _deposits(1, 2, 3), ExpectedVersion.NO_STREAM)

    assert result.new_version == 3
    assert adapter.get_stream_version(stream) == 3
    assert [s.event for s in adapter.read_stream(stream)] == list(result.events)
    assert [s.event_id for s in adapter.read_all()] == [e.event_id for e in result.events]
    assert adapter.current_position() == result.last_position
    assert adapter.count_events() == 3
    assert adapter.count_events(ReadOptions(after=result.positions[0])) == 2
    assert adapter.get_events_by_type("Account") == list(result.events)
    assert adapter.get_events_by_type("Nothing") == []
    assert adapter.get_events(stream, "Account", from_version=2).version == 3
    assert [e.aggregate_version for e in adapter.get_events(stream).events] == [1, 2, 3]
    second = result.events[1]
    assert adapter.event_exists(second.event_id)
    assert adapter.get_event(second.event_id).event == second
    assert not adapter.event_exists(uuid4())
    missing = uuid4()
    with pytest.raises(EventNotFoundError) as raised:
        adapter.get_event(missing)
    assert raised.value.event_id == missing


def test_read_iterators_page_through_the_loop_and_stop_early(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    stream = uuid4()
    adapter.append_events(stream, "Account", _deposits(*range(1, 26)), 0)
    paged = ReadOptions(batch_size=4)

    assert [s.version for s in adapter.read_stream(stream, paged)] == list(range(1, 26))
    backward = ReadOptions(direction=ReadDirection.BACKWARD, batch_size=3)
    assert [s.version for s in adapter.read_stream(stream, backward)] == list(range(25, 0, -1))
    assert len(list(adapter.read_all(ReadOptions(limit=7, batch_size=2)))) == 7

    first_ten = list(adapter.read_all(ReadOptions(batch_size=10)))[:10]
    after = ReadOptions(after=first_ten[-1].position, batch_size=5)
    assert [s.version for s in adapter.read_all(after)] == list(range(11, 26))

    abandoned = adapter.read_stream(stream, paged)
    assert next(abandoned).version == 1
    abandoned.close()  # the async generator is closed on the loop
    assert adapter.get_stream_version(stream) == 25
    assert adapter.current_position() > Position.START


# -- many threads at once --------------------------------------------------------------------


def test_threads_racing_for_one_version_leave_exactly_one_winner(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    stream = uuid4()

    def append(i: int) -> UUID | OptimisticLockError:
        try:
            result = adapter.append_events(stream, "Account", _deposits(i), 0)
        except OptimisticLockError as exc:
            return exc
        return result.events[0].event_id

    outcomes = _in_threads(16, append)

    winners = [o for o in outcomes if isinstance(o, UUID)]
    conflicts = [o for o in outcomes if isinstance(o, OptimisticLockError)]
    assert len(winners) == 1
    assert len(conflicts) == 15
    assert all(c.aggregate_id == stream and c.actual_version == 1 for c in conflicts)
    assert [s.event_id for s in adapter.read_stream(stream)] == winners


def test_threads_hammering_one_stream_lose_and_duplicate_no_event(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    stream = uuid4()
    per_thread = 15

    def writer(i: int) -> tuple[list[UUID], list[tuple[OptimisticLockError, int]]]:
        written: list[UUID] = []
        conflicts: list[tuple[OptimisticLockError, int]] = []
        while len(written) < per_thread:
            event = Deposited(amount=i)
            version = adapter.get_stream_version(stream)
            try:
                adapter.append_events(stream, "Account", [event], version)
            except OptimisticLockError as exc:
                conflicts.append((exc, version))
                continue
            written.append(event.event_id)
        return written, conflicts

    results = _in_threads(12, writer)

    stored = list(adapter.read_stream(stream))
    written = [event_id for ids, _ in results for event_id in ids]
    assert [s.version for s in stored] == list(range(1, 12 * per_thread + 1))
    assert sorted(s.event_id for s in stored) == sorted(written)
    assert len(set(written)) == len(written)
    conflicts = [conflict for _, raised in results for conflict in raised]
    assert all(exc.aggregate_id == stream for exc, _ in conflicts)
    assert all(exc.actual_version > version for exc, version in conflicts)
    assert adapter.get_stream_version(stream) == 12 * per_thread


# -- misuse from async code ------------------------------------------------------------------


def test_blocking_calls_from_a_running_event_loop_raise_a_typed_error(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    stream = uuid4()
    adapter.append_events(stream, "Account", _deposits(5), 0)

    async def misuse(call: Callable[[], object]) -> None:
        call()

    with pytest.raises(SyncAdapterError, match="get_stream_version"):
        asyncio.run(misuse(lambda: adapter.get_stream_version(stream)))
    with pytest.raises(SyncAdapterError, match=r"SyncEventStoreAdapter\.read_stream"):
        asyncio.run(misuse(lambda: list(adapter.read_stream(stream))))
    with pytest.raises(SyncAdapterError, match="close"):
        asyncio.run(misuse(adapter.close))
    assert not adapter.closed
    assert asyncio.run(asyncio.to_thread(adapter.get_stream_version, stream)) == 1


def test_a_command_calling_the_adapter_on_its_own_loop_raises_instead_of_deadlocking(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    repo = SyncAggregateRepository(adapter, AggregateRepository(adapter.store, Account))
    account = uuid4()

    with pytest.raises(SyncAdapterError, match="event loop"):
        repo.execute(account, lambda a: adapter.get_stream_version(a.aggregate_id), create=True)
    assert not repo.exists(account)


# -- closing ---------------------------------------------------------------------------------


def test_close_closes_the_store_on_its_loop_and_stops_the_thread() -> None:
    store = ClosingStore()
    before = set(threading.enumerate())
    with SyncEventStoreAdapter(store) as adapter:
        (loop_thread,) = set(threading.enumerate()) - before
        adapter.append_events(uuid4(), "Account", _deposits(1), 0)
    assert store.closed_on == loop_thread.name
    assert not loop_thread.is_alive()
    assert adapter.closed
    with pytest.raises(SyncAdapterError, match="closed"):
        adapter.current_position()
    adapter.close()  # idempotent
    assert store.closed_on == loop_thread.name


def test_ending_a_read_early_closes_the_store_read_on_the_loop() -> None:
    store = ClosingStore()
    with SyncEventStoreAdapter(store) as adapter:
        stream = uuid4()
        adapter.append_events(stream, "Account", _deposits(1, 2, 3, 4), 0)
        reading = adapter.read_stream(stream, ReadOptions(batch_size=2))
        assert [next(reading).version, next(reading).version, next(reading).version] == [1, 2, 3]
        assert store.open_reads == 1
        reading.close()
        assert store.open_reads == 0
        assert [s.version for s in adapter.read_stream(stream)] == [1, 2, 3, 4]
        assert store.open_reads == 0


def test_close_lets_running_calls_finish_and_ends_open_reads() -> None:
    store = ClosingStore()
    adapter = SyncEventStoreAdapter(store)
    stream = uuid4()
    adapter.append_events(stream, "Account", _deposits(1, 2, 3), 0)
    reading = adapter.read_stream(stream, ReadOptions(batch_size=1))
    assert next(reading).version == 1
    assert store.open_reads == 1
    started = threading.Event()

    async def slow_version() -> int:
        started.set()
        await asyncio.sleep(0.05)
        return await store.get_stream_version(stream)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(adapter.call, slow_version)
        started.wait()
        adapter.close()
        assert running.result() == 3
    assert store.closed_on is not None
    assert store.open_reads == 0  # the abandoned read was closed on the loop
    with pytest.raises(SyncAdapterError, match="closed"):
        next(reading)


# -- the repository facade -------------------------------------------------------------------


def test_repository_facade_loads_saves_and_reports_conflicts(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    repo = SyncAggregateRepository(adapter, AggregateRepository(adapter.store, Account))
    account = uuid4()
    missing = uuid4()

    with pytest.raises(AggregateNotFoundError) as not_found:
        repo.load(missing)
    assert not_found.value.aggregate_id == missing
    assert not repo.exists(missing)

    fresh = repo.create_new(account)
    fresh.deposit(10)
    saved = repo.save(fresh)
    assert saved is not None
    assert saved.new_version == 1
    assert repo.save(fresh) is None  # nothing new to save
    assert repo.exists(account)

    first, second = repo.load(account), repo.load_or_create(account)
    first.deposit(5)
    second.deposit(7)
    repo.save(first)
    with pytest.raises(OptimisticLockError) as conflict:
        repo.save(second)
    assert conflict.value.actual_version == 2
    assert repo.load(account).state.balance == 15
    assert repo.aggregate_type == "Account"
    assert repo.stats.loads == 4


def test_repository_execute_from_many_threads_applies_every_command(
    adapter: SyncEventStoreAdapter[Any],
) -> None:
    inner = AggregateRepository(adapter.store, Account, max_retries=200)
    account = uuid4()
    per_thread = 8

    async def deposit_later(aggregate: Account) -> int:
        aggregate.deposit(1000)
        return aggregate.version

    with SyncAggregateRepository(adapter, inner) as repo:

        def commands(i: int) -> int:
            for _ in range(per_thread):
                repo.execute(account, lambda a: a.deposit(i + 1), create=True)
            return i

        _in_threads(10, commands)
        version = repo.execute(account, deposit_later)

    loaded = SyncAggregateRepository(adapter, AggregateRepository(adapter.store, Account))
    expected = per_thread * sum(range(1, 11)) + 1000
    assert loaded.load(account).state.balance == expected
    assert version == 10 * per_thread + 1
    assert adapter.get_stream_version(account) == version


def test_the_callers_tenant_scope_reaches_the_store_through_the_adapter() -> None:
    """Context variables set in the calling thread (the tenant, the trace) hold in the call
    that runs on the adapter's loop."""
    from eventsource.exceptions import TenantMismatchError
    from eventsource.multitenancy import TenantAggregateRepository, tenant_scope
    from tests.multitenancy.test_multitenancy import Account as TenantAccount
    from tests.multitenancy.test_multitenancy import registry as tenant_registry

    with SyncEventStoreAdapter(InMemoryEventStore(registry=tenant_registry)) as adapter:
        wallets = SyncAggregateRepository(
            adapter, TenantAggregateRepository(adapter.store, TenantAccount)
        )
        owner, intruder, wallet_id = uuid4(), uuid4(), uuid4()
        with tenant_scope(owner):
            wallets.execute(wallet_id, lambda w: w.deposit(5), create=True)
            assert wallets.load(wallet_id).state.balance == 5
        (stored,) = adapter.read_stream(wallet_id)
        assert stored.event.tenant_id == owner
        with tenant_scope(intruder), pytest.raises(TenantMismatchError):
            wallets.load(wallet_id)
