"""`Harness.settle()` runs everything to quiescence without sleeping or polling, and
`RecordingEventBus.wait_idle()` waits for what `publish` does not."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from eventsource import InMemoryEventBusConfig, SubscriptionConfig
from eventsource.stores.interface import StoredEvent
from eventsource.testing import Harness, RecordingEventBus, assert_event_published
from tests.testing_toolkit._domain import (
    Account,
    AccountClosed,
    AccountOpened,
    Balance,
    Balances,
    MoneyDeposited,
    registry,
)

# A poll interval of an hour: if anything waited for a poll, settle() would hang (and fail
# by its guard) instead of returning.
NEVER_POLL = SubscriptionConfig(max_attempts=1, circuit_breaker=None, poll_interval=3600.0)


async def test_settle_runs_commands_bus_handlers_and_projections_to_the_end() -> None:
    async with Harness(registry=registry, subscription_config=NEVER_POLL) as harness:
        accounts = harness.repository(Account)
        balances = Balances()
        harness.subscribe(balances)

        async def welcome_bonus(event: AccountOpened) -> None:
            # a handler that runs a command: its events are appended and published from
            # inside a delivery, which `publish` cannot wait for
            await accounts.execute(event.aggregate_id, lambda a: a.deposit(Decimal(10)))

        harness.bus.subscribe(AccountOpened, welcome_bonus)
        account_ids = [uuid4() for _ in range(5)]
        for index, account_id in enumerate(account_ids):
            await accounts.execute(account_id, lambda a, i=index: a.open(f"owner {i}"), create=True)
        await harness.settle()

        for index, account_id in enumerate(account_ids):
            assert await balances.models.get(account_id) == Balance(
                id=account_id, owner=f"owner {index}", amount=Decimal(10), version=2
            )
        assert_event_published(harness.bus, MoneyDeposited(amount=Decimal(10)), times=5)
        health = await harness.subscriptions.health()
        assert health.ready


async def test_settle_on_an_empty_store_returns() -> None:
    async with Harness(registry=registry, subscription_config=NEVER_POLL) as harness:
        harness.subscribe(Balances())
        await harness.settle()
        assert harness.bus.idle


async def test_append_feeds_projections_and_bus_handlers() -> None:
    seen: list[UUID] = []

    async def record(event: AccountOpened) -> None:
        seen.append(event.aggregate_id)

    async with Harness(registry=registry, subscription_config=NEVER_POLL) as harness:
        balances = Balances()
        harness.subscribe(balances)
        billing = harness.consumer("billing")
        billing.subscribe(AccountOpened, record)
        results = await harness.append(AccountOpened(owner="ann"), MoneyDeposited(amount=3))
        await harness.settle()
        account_id = results[0].aggregate_id
        assert results[1].aggregate_id == account_id
        assert await balances.models.get(account_id) == Balance(
            id=account_id, owner="ann", amount=Decimal(3), version=2
        )
        assert seen == [account_id]
        assert len(harness.bus.published) == 2


async def test_a_failing_projection_makes_settle_fail_with_its_error() -> None:
    class Broken(Balances):
        name = "broken_balances"

        async def _closed(self, event: AccountClosed) -> None:  # type: ignore[override]
            raise RuntimeError("the read model refused the close")

    async with Harness(registry=registry, subscription_config=NEVER_POLL) as harness:
        harness.subscribe(Broken())
        accounts = harness.repository(Account)
        account_id = uuid4()
        await accounts.execute(account_id, lambda a: a.open("ann"), create=True)
        await accounts.execute(account_id, lambda a: a.close("moved"))
        with pytest.raises(AssertionError) as failure:
            await harness.settle()
        message = str(failure.value)
        assert "subscription broken_balances: AccountClosed" in message
        assert "RuntimeError: the read model refused the close" in message
        await harness.settle()  # reported once; nothing new since


async def test_a_failing_bus_handler_makes_settle_fail_unless_expected() -> None:
    async def refuse(event: AccountOpened) -> None:
        raise ValueError(f"no welcome for {event.owner}")

    async with Harness(registry=registry, fail_on_dead_letters=False) as harness:
        harness.bus.subscribe(AccountOpened, refuse)
        await harness.append(AccountOpened(owner="ann"))
        await harness.settle()
        letters = await harness.bus.dead_letters()
        assert [letter.error for letter in letters] == ["ValueError: no welcome for ann"]
    async with Harness(registry=registry) as harness:
        harness.bus.subscribe(AccountOpened, refuse)
        await harness.append(AccountOpened(owner="bob"))
        with pytest.raises(AssertionError, match=r"bus group default: AccountOpened .* bob"):
            await harness.settle()


async def test_wait_idle_waits_for_a_retry_of_an_event_published_by_a_handler() -> None:
    attempts: list[str] = []
    # The retry waits on a timer, in neither the queue nor a handler: only the bus's own
    # count of pending retries keeps wait_idle() from returning before it ran.
    config = InMemoryEventBusConfig(max_attempts=3, retry_delay=0.05)
    bus = RecordingEventBus(config, registry=registry)

    async def forward(event: AccountOpened) -> None:
        await bus.publish([MoneyDeposited(amount=1, aggregate_id=event.aggregate_id)])

    async def flaky(event: MoneyDeposited) -> None:
        attempts.append("try")
        if len(attempts) == 1:
            raise ConnectionError("flaky once")

    bus.subscribe(AccountOpened, forward)
    bus.subscribe(MoneyDeposited, flaky)
    async with Harness(registry=registry, bus=bus) as harness:
        await harness.append(AccountOpened(owner="ann"))
        await harness.settle()
        assert attempts == ["try", "try"]
        assert harness.bus.idle


async def test_a_subscription_that_cannot_finish_fails_settle_with_its_state() -> None:
    async def stuck(stored: StoredEvent) -> None:
        raise RuntimeError("never")

    config = SubscriptionConfig(max_attempts=1, on_undecodable="stop", poll_interval=3600.0)
    async with Harness(subscription_config=config) as harness:  # default registry: unknown events
        harness.subscribe(stuck, name="stuck")
        await harness.append(AccountOpened(owner="ann"), publish=False)
        with pytest.raises(AssertionError) as failure:
            await harness.settle(timeout=0.5)
        assert "the harness did not settle within 0.5s" in str(failure.value)
        assert "subscription stuck: failed" in str(failure.value)


async def test_the_harness_uses_a_store_it_is_given_and_leaves_it_open() -> None:
    from eventsource import InMemoryEventStore

    async with InMemoryEventStore(registry=registry) as store:
        async with Harness(store=store, registry=registry) as harness:
            await harness.repository(Account).execute(uuid4(), lambda a: a.open("x"), create=True)
            await harness.settle()
        assert len([e async for e in store.read_all()]) == 1


async def test_a_recording_bus_dead_letters_a_failing_handler_at_once() -> None:
    calls: list[str] = []

    async def refuse(event: AccountOpened) -> None:
        calls.append(event.owner)
        raise ValueError("no")

    async with RecordingEventBus(registry=registry) as bus:
        bus.subscribe(AccountOpened, refuse)
        await bus.publish([AccountOpened(owner="ann", aggregate_id=uuid4())])
        letters = await bus.dead_letters()
    assert calls == ["ann"]
    assert [(letter.attempts, letter.error) for letter in letters] == [(1, "ValueError: no")]
