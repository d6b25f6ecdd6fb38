"""Multi-tenancy: the tenant scope, tenant-bound events, the tenant-checking repository, and
the property that no read, subscription or bus consumer of tenant A ever sees tenant B."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from eventsource import (
    AggregateCache,
    DeclarativeAggregate,
    EventRegistry,
    EventStore,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
    InMemoryEventBus,
    InMemoryEventBusConfig,
    InMemoryEventStore,
    ReadOptions,
    StoredEvent,
    SubscriptionConfig,
    SubscriptionManager,
    handles,
)
from eventsource.bus import InMemoryBroker
from eventsource.events.base import DomainEvent
from eventsource.exceptions import TenantMismatchError, TenantRequiredError
from eventsource.multitenancy import (
    TenantAggregateRepository,
    TenantDomainEvent,
    get_current_tenant,
    require_current_tenant,
    reset_current_tenant,
    set_current_tenant,
    tenant_scope,
)
from tests._stores import STORE_KINDS, open_event_store

registry = EventRegistry()


class Deposited(TenantDomainEvent, registry=registry):
    amount: int


class Ledger(BaseModel):
    balance: int = 0


class Account(DeclarativeAggregate[Ledger]):
    aggregate_type = "Account"

    def deposit(self, amount: int) -> None:
        self.apply_event(Deposited(amount=amount))

    @handles(Deposited)
    def _deposited(self, event: Deposited) -> None:
        self.state.balance += event.amount


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


# -- the scope ------------------------------------------------------------------------------


async def test_scopes_nest_follow_tasks_and_stay_apart() -> None:
    a, b = uuid4(), uuid4()
    assert get_current_tenant() is None
    with pytest.raises(TenantRequiredError):
        require_current_tenant()
    async with tenant_scope(a):
        with tenant_scope(b):
            assert require_current_tenant() == b
        assert get_current_tenant() == a
        assert await asyncio.create_task(_current_later()) == a  # tasks inherit the scope
    assert get_current_tenant() is None

    async def request(tenant: UUID) -> list[UUID | None]:
        async with tenant_scope(tenant):
            seen = []
            for _ in range(20):
                await asyncio.sleep(random.uniform(0, 0.002))
                seen.append(get_current_tenant())
            return seen

    tenants = [uuid4() for _ in range(10)]
    results = await asyncio.gather(*(request(t) for t in tenants))
    for tenant, seen in zip(tenants, results, strict=True):
        assert seen == [tenant] * 20  # concurrent requests never see each other's tenant

    token = set_current_tenant(a)
    assert get_current_tenant() == a
    reset_current_tenant(token)
    assert get_current_tenant() is None
    with pytest.raises(TypeError):
        tenant_scope("not-a-uuid")  # type: ignore[arg-type]


async def _current_later() -> UUID | None:
    await asyncio.sleep(0)
    return get_current_tenant()


def test_a_tenant_event_takes_the_scope_or_refuses_to_exist() -> None:
    tenant = uuid4()
    with tenant_scope(tenant):
        assert Deposited(amount=1).tenant_id == tenant
    other = uuid4()
    assert Deposited(amount=1, tenant_id=other).tenant_id == other
    with pytest.raises(TenantRequiredError):
        Deposited(amount=1)


# -- the repository -------------------------------------------------------------------------


async def test_the_repository_stamps_and_guards_the_tenant(store: EventStore) -> None:
    accounts = TenantAggregateRepository(store, Account, cache=AggregateCache())
    alice, bob = uuid4(), uuid4()
    account_id = uuid4()
    async with tenant_scope(alice):
        account = accounts.create_new(account_id)
        account.deposit(10)
        result = await accounts.save(account)
        assert result is not None
        assert [e.tenant_id for e in result.events] == [alice]
        assert (await accounts.load(account_id)).state.balance == 10  # cached now
        carried = await accounts.load(account_id)  # loaded as alice, saved below as bob
        carried.deposit(7)
    async with tenant_scope(bob):
        with pytest.raises(TenantMismatchError) as refused:
            await accounts.load(account_id)
        assert (refused.value.expected, refused.value.actual) == (bob, alice)
        with pytest.raises(TenantMismatchError):
            await accounts.execute(account_id, lambda a: a.deposit(1))
        with pytest.raises(TenantMismatchError):
            await accounts.save(carried)
        stray = accounts.create_new(uuid4())
        stray.apply_event(Deposited(amount=5, tenant_id=alice))
        with pytest.raises(TenantMismatchError):
            await accounts.save(stray)
    with pytest.raises(TenantRequiredError):
        await accounts.load(account_id)
    async with tenant_scope(alice):
        loaded = await accounts.load(account_id)
        assert loaded.state.balance == 10
    assert await store.get_stream_version(account_id) == 1


# -- no tenant ever sees another's events ---------------------------------------------------


async def _write(
    store: EventStore, writes: list[tuple[int, int, int]], tenants: list[UUID]
) -> dict[UUID, set[UUID]]:
    """Run `writes` (tenant index, account index, deposits) concurrently, each in its
    tenant's scope; the event ids written per tenant."""
    accounts = TenantAggregateRepository(store, Account)
    ids: dict[UUID, list[UUID]] = {t: [uuid4() for _ in range(3)] for t in tenants}
    written: dict[UUID, set[UUID]] = {t: set() for t in tenants}

    async def write(tenant: UUID, account_id: UUID, deposits: int) -> None:
        async with tenant_scope(tenant):

            def command(account: Account) -> list[UUID]:
                for n in range(deposits):
                    account.deposit(n + 1)
                return [e.event_id for e in account.uncommitted_events]

            written[tenant].update(await accounts.execute(account_id, command, create=True))

    await asyncio.gather(*(write(tenants[t], ids[tenants[t]][a], d) for t, a, d in writes))
    return written


_WRITES = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 3)), min_size=1, max_size=25
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=_WRITES)
def test_reads_never_cross_tenants(writes: list[tuple[int, int, int]]) -> None:
    """Property: with interleaved writes of three tenants, reading the feed or a stream with
    a tenant filter yields exactly that tenant's events."""

    async def check() -> None:
        store = InMemoryEventStore(registry=registry)
        tenants = [uuid4() for _ in range(3)]
        written = await _write(store, writes, tenants)
        for tenant in tenants:
            feed = [s async for s in store.read_all(ReadOptions(tenant_id=tenant))]
            assert {s.event_id for s in feed} == written[tenant]
            assert all(s.event.tenant_id == tenant for s in feed)

    asyncio.run(check())


async def test_subscriptions_and_bus_consumers_see_only_their_tenant(store: EventStore) -> None:
    tenants = [uuid4() for _ in range(3)]
    broker = InMemoryBroker()
    consumers: dict[UUID, list[DomainEvent]] = {}
    for tenant in tenants:
        bus = InMemoryEventBus(
            InMemoryEventBusConfig(consumer_group=f"reports-{tenant}", tenant_id=tenant),
            broker=broker,
            registry=registry,
        )
        consumers[tenant] = []
        bus.subscribe_to_all_events(consumers[tenant].append)
        await bus.start_consuming()
    publisher = InMemoryEventBus(
        InMemoryEventBusConfig(consumer_group="publisher", auto_start=False),
        broker=broker,
        registry=registry,
    )
    writes = [(random.randrange(3), random.randrange(3), random.randint(1, 3)) for _ in range(30)]
    written = await _write(store, writes, tenants)
    async for stored in store.read_all():
        await publisher.publish([stored.event])

    seen: dict[UUID, list[StoredEvent]] = {tenant: [] for tenant in tenants}
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), InMemoryDLQRepository()
    ) as manager:
        subscriptions = []
        for tenant in tenants:

            async def record(stored: StoredEvent, tenant: UUID = tenant) -> None:
                seen[tenant].append(stored)

            config = SubscriptionConfig(tenant_id=tenant, poll_interval=0.05)
            subscriptions.append(manager.subscribe(record, name=f"t-{tenant}", config=config))
        await manager.start()
        position = await store.current_position()
        for subscription in subscriptions:
            await subscription.wait_for(position, timeout=20)
    for tenant in tenants:
        assert {s.event_id for s in seen[tenant]} == written[tenant]
        assert {e.event_id for e in consumers[tenant]} == written[tenant]
