"""`TenancyContract`: tenant isolation of `TenantAggregateRepository` on an event store.

A backend's test module subclasses it and supplies an empty store for the given registry::

    class TestMyStoreTenancy(TenancyContract):
        async def create_store(self, registry: EventRegistry) -> EventStore:
            return MyEventStore(..., registry=registry)

Tenants A and B race on the same aggregate ids through one repository (as the requests of a
web application share one), with every path a load can take: the aggregate cache, snapshots,
single-flight loads and plain replays. The store and the snapshot store are wrapped so that
a read is answered late (its result is read, then held 20 ms or until the other tenant has
committed), which lets the other tenant's first event commit between any two reads of a load.
Whatever the interleaving, no tenant ever sees another's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from eventsource.aggregates.base import DeclarativeAggregate
from eventsource.aggregates.cache import AggregateCache
from eventsource.aggregates.repository import AggregateRepository
from eventsource.aggregates.snapshots import SnapshotPolicy
from eventsource.events.base import DomainEvent
from eventsource.events.handlers import handles
from eventsource.events.registry import EventRegistry
from eventsource.exceptions import (
    AggregateNotFoundError,
    EventNotFoundError,
    TenantMismatchError,
    TenantRequiredError,
)
from eventsource.multitenancy import TenantAggregateRepository, TenantDomainEvent, tenant_scope
from eventsource.multitenancy.context import get_current_tenant
from eventsource.snapshots.in_memory import InMemorySnapshotStore
from eventsource.snapshots.interface import Snapshot, SnapshotStore
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
)

__all__ = ["TenancyContract", "tenancy_registry"]

tenancy_registry = EventRegistry()
"""The events of `TenancyContract`."""

_DELAY = 0.02
"""How long a delayed read is held (seconds): long enough for another tenant to commit."""


class TenantDeposited(TenantDomainEvent, registry=tenancy_registry):
    amount: int


class UntenantedDeposited(DomainEvent, registry=tenancy_registry):
    """An event of a stream written without tenants (through a plain repository)."""

    amount: int


class _Ledger(BaseModel):
    balance: int = 0


class _Account(DeclarativeAggregate[_Ledger]):
    aggregate_type = "TenancyAccount"

    def deposit(self, amount: int) -> None:
        self.apply_event(TenantDeposited(amount=amount))

    def deposit_untenanted(self, amount: int) -> None:
        self.apply_event(UntenantedDeposited(amount=amount))

    @handles(TenantDeposited)
    def _deposited(self, event: TenantDeposited) -> None:
        self.state.balance += event.amount

    @handles(UntenantedDeposited)
    def _untenanted(self, event: UntenantedDeposited) -> None:
        self.state.balance += event.amount


class _Interleaving:
    """Where the wrapped stores hold a read's answer: until a tenant's gate opens, or for a
    random pick of 0 or 20 ms."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.gates: dict[UUID, asyncio.Event] = {}
        self.random_delays = False

    async def pause(self) -> None:
        tenant = get_current_tenant()
        gate = self.gates.get(tenant) if tenant is not None else None
        if gate is not None:
            await gate.wait()
        elif self.random_delays:
            await asyncio.sleep(self.rng.choice((0.0, 0.0, _DELAY)))


class _LateEventStore(EventStore):
    """An event store whose stream reads are answered late: read first, delivered after
    `pause` (so anything committed meanwhile is missing from the answer)."""

    def __init__(self, inner: EventStore, interleaving: _Interleaving) -> None:
        self.inner = inner
        self.interleaving = interleaving

    async def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        return await self.inner.append_events(
            aggregate_id, aggregate_type, events, expected_version
        )

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        return await self.inner.append_events(
            aggregate_id, aggregate_type, events, expected_version
        )

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        answer = [stored async for stored in self.inner.read_stream(aggregate_id, options)]
        await self.interleaving.pause()
        for stored in answer:
            yield stored

    def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        return self.inner.read_all(options)

    async def current_position(self) -> Position:
        return await self.inner.current_position()

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        version = await self.inner.get_stream_version(aggregate_id)
        await self.interleaving.pause()
        return version

    async def event_exists(self, event_id: UUID) -> bool:
        return await self.inner.event_exists(event_id)

    async def get_event(self, event_id: UUID) -> StoredEvent:
        return await self.inner.get_event(event_id)

    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        return self.inner.listen()


class _LateSnapshotStore(SnapshotStore):
    """A snapshot store whose `get` is answered late, like `_LateEventStore`'s reads."""

    def __init__(self, inner: SnapshotStore, interleaving: _Interleaving) -> None:
        self.inner = inner
        self.interleaving = interleaving

    async def save(self, snapshot: Snapshot) -> None:
        await self.inner.save(snapshot)

    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        answer = await self.inner.get(aggregate_id, aggregate_type)
        await self.interleaving.pause()
        return answer

    async def delete(self, aggregate_id: UUID) -> bool:
        return await self.inner.delete(aggregate_id)

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        return await self.inner.invalidate(
            aggregate_type, schema_version_below=schema_version_below
        )


_PATHS = ("cache", "snapshots", "events")
"""What a load starts from: the aggregate cache, a snapshot, or the stream alone."""


class TenancyContract(ABC):
    """Abstract pytest suite; subclasses implement `create_store`."""

    pytestmark = pytest.mark.asyncio

    trials: ClassVar[int] = 40
    """Races per load path in the randomized test (each on a fresh aggregate id)."""

    @abstractmethod
    async def create_store(self, registry: EventRegistry) -> EventStore:
        """A new, empty event store decoding with `registry`."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[EventStore]:
        store = await self.create_store(tenancy_registry)
        try:
            yield store
        finally:
            await store.close()

    def _repository(
        self, store: EventStore, interleaving: _Interleaving, path: str
    ) -> TenantAggregateRepository[_Account]:
        """One repository for both tenants, loading through `path`."""
        return TenantAggregateRepository(
            _LateEventStore(store, interleaving),
            _Account,
            snapshot_store=_LateSnapshotStore(InMemorySnapshotStore(), interleaving),
            snapshot_policy=SnapshotPolicy.every(1) if path != "events" else SnapshotPolicy.never(),
            cache=AggregateCache() if path == "cache" else None,
            single_flight=True,
        )

    # -- a load that starts before another tenant's first commit -------------------------------

    @pytest.mark.parametrize("path", _PATHS)
    @pytest.mark.parametrize("how", ["load_or_create", "execute"])
    async def test_a_late_answer_never_hands_over_another_tenants_state(
        self, store: EventStore, path: str, how: str
    ) -> None:
        """B's reads are answered only after A's first event (and its snapshot and cache
        entry) committed: the answers B got before are stale, what B reads after is A's."""
        interleaving = _Interleaving(0)
        repository = self._repository(store, interleaving, path)
        a, b, account = uuid4(), uuid4(), uuid4()
        a_committed = interleaving.gates[b] = asyncio.Event()
        seen: list[int] = []

        async def as_a() -> None:
            try:
                async with tenant_scope(a):
                    await repository.execute(account, lambda acc: acc.deposit(7), create=True)
            finally:
                a_committed.set()  # also when A failed, so that B never waits forever

        async def as_b() -> None:
            async with tenant_scope(b):
                if how == "load_or_create":
                    loaded = await repository.load_or_create(account)
                    seen.append(loaded.state.balance)
                else:
                    await repository.execute(
                        account, lambda acc: seen.append(acc.state.balance), create=True
                    )

        outcomes = await asyncio.gather(as_b(), as_a(), return_exceptions=True)
        assert outcomes[1] is None
        assert outcomes[0] is None or isinstance(outcomes[0], TenantMismatchError), outcomes[0]
        assert seen in ([], [0]), f"tenant B saw tenant A's balance: {seen}"

    @pytest.mark.parametrize("path", _PATHS)
    async def test_racing_tenants_only_ever_see_their_own_events(
        self, store: EventStore, path: str
    ) -> None:
        """Many races of A and B on fresh ids, with reads held at random: A deposits 1s and
        B deposits 1000s, so a balance shows whose events a tenant saw."""
        interleaving = _Interleaving(_PATHS.index(path))
        interleaving.random_delays = True
        repository = self._repository(store, interleaving, path)
        a, b = uuid4(), uuid4()
        amounts = {a: 1, b: 1000}
        seen: dict[UUID, list[int]] = {a: [], b: []}
        rng = random.Random(7)

        async def act(tenant: UUID, account: UUID, action: str) -> None:
            await asyncio.sleep(rng.choice((0.0, 0.0, _DELAY / 2, _DELAY)))
            async with tenant_scope(tenant):
                if action == "load_or_create":
                    loaded = await repository.load_or_create(account)
                    seen[tenant].append(loaded.state.balance)
                elif action == "load":
                    loaded = await repository.load(account)
                    seen[tenant].append(loaded.state.balance)
                elif action == "read-only":
                    await repository.execute(
                        account, lambda acc: seen[tenant].append(acc.state.balance), create=True
                    )
                else:

                    def deposit(acc: _Account) -> None:
                        seen[tenant].append(acc.state.balance)
                        acc.deposit(amounts[tenant])

                    await repository.execute(account, deposit, create=True)

        actions = ("load_or_create", "load", "read-only", "deposit")
        for _ in range(self.trials):
            account = uuid4()
            tasks = [act(a, account, "deposit"), act(a, account, rng.choice(actions))]
            tasks += [act(b, account, rng.choice(actions)) for _ in range(2)]
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for outcome in outcomes:
                assert outcome is None or isinstance(
                    outcome, TenantMismatchError | AggregateNotFoundError
                ), repr(outcome)
            stream = await store.get_events(account)
            assert len({event.tenant_id for event in stream.events}) <= 1
        assert all(balance < 1000 for balance in seen[a]), "tenant A saw tenant B's events"
        assert all(balance % 1000 == 0 for balance in seen[b]), "tenant B saw tenant A's events"

    # -- what a load starts from ---------------------------------------------------------------

    async def test_a_snapshot_is_vouched_for_by_its_stream(self, store: EventStore) -> None:
        """A snapshot of A's aggregate (state that does not name its tenant) is refused to B,
        and to B through the cache, because the event at its version is A's."""
        snapshots = InMemorySnapshotStore()
        cache = AggregateCache()
        repository: TenantAggregateRepository[_Account] = TenantAggregateRepository(
            store,
            _Account,
            snapshot_store=snapshots,
            snapshot_policy=SnapshotPolicy.every(1),
            cache=cache,
        )
        a, b, account = uuid4(), uuid4(), uuid4()
        async with tenant_scope(a):
            await repository.execute(account, lambda acc: acc.deposit(5), create=True)
        assert await snapshots.get(account) is not None
        assert len(cache) == 1
        async with tenant_scope(b):
            for _ in range(2):  # once from the cache, once from the snapshot alone
                with pytest.raises(TenantMismatchError) as raised:
                    await repository.load_or_create(account)
                assert (raised.value.expected, raised.value.actual) == (b, a)
                cache.clear()
        async with tenant_scope(a):
            assert (await repository.load(account)).state.balance == 5

    async def test_a_snapshot_its_stream_does_not_vouch_for_is_not_used(
        self, store: EventStore
    ) -> None:
        """A snapshot ahead of its stream (the event at its version is missing) is ignored:
        the load replays the stream, checking every event."""
        snapshots = InMemorySnapshotStore()
        repository: TenantAggregateRepository[_Account] = TenantAggregateRepository(
            store, _Account, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.manual()
        )
        a, account = uuid4(), uuid4()
        async with tenant_scope(a):
            await repository.execute(account, lambda acc: acc.deposit(5), create=True)
            await snapshots.save(
                Snapshot(
                    aggregate_id=account,
                    aggregate_type=_Account.aggregate_type,
                    version=9,
                    schema_version=_Account.schema_version,
                    state=_Ledger(balance=999).model_dump_json(),
                )
            )
            loaded = await repository.load(account)
        assert (loaded.version, loaded.state.balance) == (1, 5)

    async def test_events_without_a_tenant_are_refused(self, store: EventStore) -> None:
        plain: AggregateRepository[_Account] = AggregateRepository(store, _Account)
        account = uuid4()
        await plain.execute(account, lambda acc: acc.deposit_untenanted(3), create=True)
        repository: TenantAggregateRepository[_Account] = TenantAggregateRepository(store, _Account)
        async with tenant_scope(uuid4()):
            with pytest.raises(TenantMismatchError) as raised:
                await repository.load(account)
        assert raised.value.actual is None

    async def test_single_flight_is_never_shared_across_tenants(self, store: EventStore) -> None:
        """Concurrent loads of one aggregate by A and B: A's share one read, B's never join
        it (each B load reads for itself and is refused)."""
        interleaving = _Interleaving(1)
        interleaving.random_delays = True
        repository = self._repository(store, interleaving, "events")
        a, b, account = uuid4(), uuid4(), uuid4()
        async with tenant_scope(a):
            await repository.execute(account, lambda acc: acc.deposit(2), create=True)

        async def load(tenant: UUID) -> int:
            async with tenant_scope(tenant):
                return (await repository.load(account)).state.balance

        outcomes = await asyncio.gather(
            *(load(a if i % 2 else b) for i in range(20)), return_exceptions=True
        )
        assert [o for i, o in enumerate(outcomes) if i % 2] == [2] * 10
        assert all(isinstance(o, TenantMismatchError) for i, o in enumerate(outcomes) if not i % 2)

    # -- exists and get_event ------------------------------------------------------------------

    async def test_exists_answers_for_the_current_tenant_only(self, store: EventStore) -> None:
        repository: TenantAggregateRepository[_Account] = TenantAggregateRepository(store, _Account)
        a, b, account = uuid4(), uuid4(), uuid4()
        async with tenant_scope(a):
            assert not await repository.exists(account)
            await repository.execute(account, lambda acc: acc.deposit(1), create=True)
            assert await repository.exists(account)
        async with tenant_scope(b):
            assert not await repository.exists(account)
        with pytest.raises(TenantRequiredError):
            await repository.exists(account)

    async def test_get_event_returns_only_the_current_tenants_events(
        self, store: EventStore
    ) -> None:
        repository: TenantAggregateRepository[_Account] = TenantAggregateRepository(store, _Account)
        a, b, account = uuid4(), uuid4(), uuid4()
        async with tenant_scope(a):
            await repository.execute(account, lambda acc: acc.deposit(1), create=True)
            event_id = (await store.get_events(account)).events[0].event_id
            assert (await repository.get_event(event_id)).event.event_id == event_id
        async with tenant_scope(b):
            with pytest.raises(EventNotFoundError):
                await repository.get_event(event_id)
        with pytest.raises(TenantRequiredError):
            await repository.get_event(event_id)
