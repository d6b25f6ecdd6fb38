"""Per-tenant subscriptions on every event store: every path that creates or recreates one
(subscribe, partitions, rebuild, replace, a restart after a fault, dead-letter retries and the
release of parked events) delivers its own tenant's events only, with two tenants' events
written interleaved, and tenants sharing a projection keep their own checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource import (
    DomainEvent,
    EventRegistry,
    EventStore,
    ExpectedVersion,
    InMemoryEventStore,
    ReadOptions,
    StoredEvent,
)
from eventsource.exceptions import ConfigurationError, StoreConnectionError
from eventsource.projections import DatabaseProjection, DeclarativeProjection, handles
from eventsource.repositories import (
    DeadLetterStatus,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.subscriptions import (
    NotAdmittedError,
    Subscription,
    SubscriptionConfig,
    SubscriptionManager,
)
from tests._stores import STORE_KINDS, open_event_store

registry = EventRegistry()

FAST = SubscriptionConfig(
    batch_size=4, poll_interval=0.05, retry_base=0.001, retry_cap=0.01, max_attempts=1
)
PER_TENANT = 15


class Booked(DomainEvent, registry=registry):
    n: int


class Noted(DomainEvent, registry=registry):
    n: int


class Ledger(DeclarativeProjection):
    """Records (tenant, n) of what it is handed; fails on the values in `poison`."""

    def __init__(self, poison: Iterable[int] = ()) -> None:
        self.seen: list[tuple[UUID | None, int]] = []
        self.poison = frozenset(poison)

    @handles(Booked)
    def _booked(self, event: Booked) -> None:
        if event.n in self.poison:
            raise ValueError(f"cannot book {event.n}")
        self.seen.append((event.tenant_id, event.n))

    async def reset(self) -> None:
        self.seen.clear()


class LedgerV2(Ledger):
    name = "LedgerV2"


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


async def write(
    store: EventStore, tenants: dict[UUID, int], count: int = PER_TENANT, start: int = 0
) -> None:
    """`count` Booked events per tenant (n = tenant's base + i) and a Noted one, written by
    one task per tenant at once, so the tenants' events interleave in the feed."""

    async def writer(tenant: UUID, base: int) -> None:
        for i in range(start, start + count):
            events = [Booked(n=base + i, tenant_id=tenant), Noted(n=i, tenant_id=tenant)]
            await store.append_events(uuid4(), "Account", events, ExpectedVersion.NO_STREAM)
            await asyncio.sleep(0)

    await asyncio.gather(*(writer(tenant, base) for tenant, base in tenants.items()))


def booked(tenant: UUID, base: int, count: int = PER_TENANT) -> list[tuple[UUID | None, int]]:
    return [(tenant, base + i) for i in range(count)]


async def caught_up(store: EventStore, *subscriptions: Subscription) -> None:
    head = await store.current_position()
    for subscription in subscriptions:
        await subscription.wait_for(head, timeout=20)


async def of_tenant(store: EventStore, tenant: UUID, n: int) -> StoredEvent:
    async for stored in store.read_all(ReadOptions(tenant_id=tenant, event_types=["Booked"])):
        if stored.event.n == n:  # type: ignore[attr-defined]
            return stored
    raise AssertionError(f"no event {n} of tenant {tenant}")


async def test_tenants_sharing_a_projection_keep_their_own_checkpoints(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    checkpoints = InMemoryCheckpointRepository()
    first, second = Ledger(), Ledger()
    # tenant A's projection runs first and stops ...
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(first, config=replace(FAST, tenant_id=a))
        assert subscription.name == f"Ledger@{a}"
        await caught_up(store, subscription)
    # ... then tenant B's, of the same projection name, on the same checkpoints
    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(second, config=replace(FAST, tenant_id=b))
        await caught_up(store, subscription)
    assert first.seen == booked(a, 0)
    assert second.seen == booked(b, 100)  # not started at A's checkpoint
    # both at once in one manager, and an untenanted one keeps its plain name
    everyone, only_a, only_b = Ledger(), Ledger(), Ledger()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscriptions = [
            m.subscribe(everyone),
            m.subscribe(only_a, config=replace(FAST, tenant_id=a)),
            m.subscribe(only_b, name=f"ledger-{b}", config=replace(FAST, tenant_id=b)),
        ]
        assert [s.name for s in subscriptions] == ["Ledger", f"Ledger@{a}", f"ledger-{b}"]
        await caught_up(store, *subscriptions)
        assert await m.checkpoints.get("Ledger") is not None
    assert sorted(everyone.seen, key=lambda s: s[1]) == booked(a, 0) + booked(b, 100)
    assert (only_a.seen, only_b.seen) == (booked(a, 0), booked(b, 100))


async def test_replace_keeps_the_tenant_and_settings_of_the_old_subscription(
    store: EventStore,
) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        old = m.subscribe(Ledger(), config=replace(FAST, tenant_id=b, batch_size=3))
        await caught_up(store, old)
        v2 = LedgerV2()
        new = await m.replace(old.name, v2, timeout=20)
        assert [s.name for s in m.subscriptions] == [f"LedgerV2@{b}"]
        assert (new.config.tenant_id, new.config.batch_size) == (b, 3)
        assert new.config.event_types == frozenset({"Booked"})  # V2's own interest
        await write(store, {a: 0, b: 100}, count=5, start=PER_TENANT)
        await caught_up(store, new)
    assert v2.seen == booked(b, 100, PER_TENANT + 5)


async def test_replace_takes_an_explicit_config(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        old = m.subscribe(Ledger())  # every tenant
        await caught_up(store, old)
        v2 = LedgerV2()
        new = await m.replace("Ledger", v2, config=replace(FAST, tenant_id=a), timeout=20)
        assert new.name == f"LedgerV2@{a}"
        await caught_up(store, new)
        with pytest.raises(LookupError, match="no subscription 'Ledger'"):
            await m.replace("Ledger", Ledger(), config=replace(FAST, tenant_id=b))
        with pytest.raises(ValueError, match="another name"):
            await m.replace(new.name, LedgerV2())
    assert v2.seen == booked(a, 0)


async def test_rebuild_replays_the_tenants_events_only(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    ledger = Ledger()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(ledger, config=replace(FAST, tenant_id=b))
        await caught_up(store, subscription)
        rebuilt = await m.rebuild(subscription.name, timeout=20)
        assert rebuilt.config.tenant_id == b
        assert ledger.seen == booked(b, 100)
        await write(store, {a: 0, b: 100}, count=3, start=PER_TENANT)
        await caught_up(store, rebuilt)
    assert ledger.seen == booked(b, 100, PER_TENANT + 3)


async def test_partitions_deliver_the_tenants_events_only(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    ledger = Ledger()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        parts = m.subscribe_partitioned(ledger, 3, config=replace(FAST, tenant_id=a))
        assert [p.name for p in parts] == [f"Ledger@{a}.p{i}of3" for i in range(3)]
        await caught_up(store, *parts)
        rebuilt = await m.rebuild(parts[1].name, timeout=20)  # one partition again
        await caught_up(store, rebuilt)
    assert {tenant for tenant, _ in ledger.seen} == {a}
    assert set(ledger.seen) == set(booked(a, 0))


async def test_a_restart_after_a_fault_keeps_the_filter(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    read_all = store.read_all
    failures: list[int] = []

    def flaky(options: ReadOptions | None = None) -> Any:
        if not failures:
            failures.append(1)
            raise StoreConnectionError("connection lost (injected)")
        return read_all(options)

    monkeypatch.setattr(store, "read_all", flaky)
    ledger = Ledger()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as m:
        subscription = m.subscribe(ledger, config=replace(FAST, tenant_id=b))
        await caught_up(store, subscription)
        assert failures == [1]
        assert subscription.last_error is not None
        assert "StoreConnectionError" in subscription.last_error
    assert ledger.seen == booked(b, 100)


async def test_dead_letter_retries_deliver_the_tenants_events_only(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    checkpoints, dead_letters = InMemoryCheckpointRepository(), InMemoryDLQRepository()
    ledgers = {a: Ledger(poison={3, 7}), b: Ledger(poison={103, 107})}
    managers = {
        tenant: SubscriptionManager(store, checkpoints, dead_letters, config=FAST)
        for tenant in (a, b)
    }
    subscriptions = {
        tenant: managers[tenant].subscribe(ledgers[tenant], config=replace(FAST, tenant_id=tenant))
        for tenant in (a, b)
    }
    for manager in managers.values():
        await manager.start()
    try:
        await caught_up(store, *subscriptions.values())
        letters = {t: await dead_letters.list(subscriptions[t].name) for t in (a, b)}
        assert [len(letters[a]), len(letters[b])] == [2, 2]
        for ledger in ledgers.values():
            ledger.poison = frozenset()
        for letter in letters[a]:  # tenant B's manager does not run A's subscription
            with pytest.raises(LookupError, match="does not run"):
                await managers[b].retry_dead_letter(letter.id)
            kept = await dead_letters.get(letter.id)
            assert kept is not None
            assert kept.status is DeadLetterStatus.FAILED
        for tenant in (a, b):
            for letter in letters[tenant]:
                assert await managers[tenant].retry_dead_letter(letter.id)
    finally:
        for manager in managers.values():
            await manager.stop()
    assert sorted(ledgers[a].seen, key=lambda s: s[1]) == booked(a, 0)
    assert sorted(ledgers[b].seen, key=lambda s: s[1]) == booked(b, 100)


async def test_a_retry_refuses_an_event_the_filter_does_not_admit(store: EventStore) -> None:
    """Dead letters the subscription's filter would never have read (written under its name
    by older code, by hand, or before its filter changed) are refused and left as they are."""
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    dead_letters = InMemoryDLQRepository()
    ledger = Ledger()
    config = replace(FAST, tenant_id=b, aggregate_type="Account")
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=FAST
    ) as m:
        subscription = m.subscribe(ledger, config=config)
        await caught_up(store, subscription)
        others = await of_tenant(store, a, 4)
        noted = [s async for s in store.read_all(ReadOptions(event_types=["Noted"]))]
        noted_b = next(s for s in noted if s.event.tenant_id == b)
        foreign = await store.append_events(
            uuid4(), "Invoice", [Booked(n=999, tenant_id=b)], ExpectedVersion.NO_STREAM
        )
        invoice = await of_tenant(store, b, 999)
        assert foreign.last_position == invoice.position
        refused = {
            "tenant": (others, f"belongs to tenant {a}"),
            "type": (noted_b, "'Noted' is not among"),
            "aggregate type": (invoice, "'Invoice' is not"),
        }
        for stored, reason in refused.values():
            letter = await dead_letters.add(subscription.name, stored, ValueError("old"), 1)
            letter_id = letter.id
            with pytest.raises(NotAdmittedError, match=reason) as caught:
                await m.retry_dead_letter(letter_id)
            assert (caught.value.dead_letter_id, caught.value.event_id) == (
                letter_id,
                stored.event_id,
            )
            kept = await dead_letters.get(letter_id)
            assert kept is not None
            assert (kept.status, kept.attempts) == (DeadLetterStatus.FAILED, 1)
        with pytest.raises(NotAdmittedError):
            await subscription.handle(others)
    assert ledger.seen == booked(b, 100)


async def test_released_parked_events_are_the_tenants_only(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    await write(store, {a: 0, b: 100})
    dead_letters = InMemoryDLQRepository()
    ledger = Ledger(poison={200})
    config = replace(FAST, tenant_id=b, park_aggregate=True)
    account = uuid4()
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=FAST
    ) as m:
        subscription = m.subscribe(ledger, config=config)
        await store.append_events(account, "Account", [Booked(n=200, tenant_id=b)], 0)
        # another tenant's event in the same stream (a plain store lets anyone append)
        await store.append_events(account, "Account", [Booked(n=201, tenant_id=a)], 1)
        await store.append_events(account, "Account", [Booked(n=202, tenant_id=b)], 2)
        await caught_up(store, subscription)
        first, parked = await dead_letters.list(subscription.name)
        # a letter of A's event under B's subscription (by hand, or older code)
        intruder = await of_tenant(store, a, 201)
        await dead_letters.add(subscription.name, intruder, ValueError("old"), 1)
        ledger.poison = frozenset()
        # the first is delivered; the release stops at A's event, leaving it and the rest
        assert await m.retry_dead_letter(first.id) is False
        waiting = await dead_letters.list(subscription.name)
        assert {w.event_id for w in waiting} == {intruder.event_id, parked.event_id}
    assert ledger.seen == [*booked(b, 100), (b, 200)]
    assert all(tenant == b for tenant, _ in ledger.seen)
    assert parked.error.startswith("AggregateParkedError")


async def test_a_database_projection_runs_under_its_own_name_only() -> None:
    """It saves its checkpoint under its own name, inside its transaction: a subscription
    under another name (a tenant's key) would read a checkpoint nobody moves."""

    class Sums(DatabaseProjection):
        @handles(Booked)
        async def _booked(self, connection: Any, event: Booked) -> None:
            raise AssertionError("never delivered here")

    tenant = uuid4()
    checkpoints: Any = InMemoryCheckpointRepository()  # the refusal comes before any I/O
    manager = SubscriptionManager(InMemoryEventStore(registry=registry), checkpoints)
    config = SubscriptionConfig(tenant_id=tenant)
    with pytest.raises(ConfigurationError, match="contains its tenant id"):
        manager.subscribe(Sums(None, checkpoints), config=config)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="under its own name"):
        manager.subscribe(Sums(None, checkpoints), name="other")  # type: ignore[arg-type]
    mine = Sums(None, checkpoints)  # type: ignore[arg-type]
    mine.name = f"sums-{tenant}"
    assert manager.subscribe(mine, config=config).name == f"sums-{tenant}"
