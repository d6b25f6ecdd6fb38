"""Read-your-writes: `execute_command` returns the position of what a command appended, and a
query that waits for a subscription to reach it sees the command's effect, on every store,
with many commands at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from eventsource import AggregateRepository, EventStore, Position
from eventsource.projections import DeclarativeProjection, handles
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from tests._stores import STORE_KINDS, open_event_store
from tests.unit.test_aggregates import Deposited, Opened, WalletAggregate, registry

FAST = SubscriptionConfig(batch_size=16, poll_interval=0.05)


class Balances(DeclarativeProjection):
    """A read model kept by the subscription: balance per wallet."""

    def __init__(self) -> None:
        super().__init__()
        self.balance: dict[UUID, int] = {}
        self.applied: set[UUID] = set()

    @handles(Opened)
    async def _opened(self, event: Opened) -> None:
        self.balance[event.aggregate_id] = 0

    @handles(Deposited)
    async def _deposited(self, event: Deposited) -> None:
        self.balance[event.aggregate_id] += event.amount
        self.applied.add(event.event_id)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


async def test_a_query_that_waits_for_the_command_position_sees_its_effect(
    store: EventStore,
) -> None:
    wallets = AggregateRepository(store, WalletAggregate, max_retries=50)
    balances = Balances()
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as manager:
        subscription = manager.subscribe(balances)
        ids = [uuid4() for _ in range(4)]
        for wallet in ids:
            opened = await wallets.execute_command(wallet, lambda w: w.open("ann"), create=True)
            assert opened.version == 1
            assert opened.append is not None
            assert opened.position == opened.append.last_position

        async def deposit_then_query(wallet: UUID, amount: int) -> tuple[int, bool]:
            # What a web handler does: the command returns a token (as text), the next
            # request's query waits for the read model to reach it.
            done = await wallets.execute_command(wallet, lambda w: w.deposit(amount))
            assert done.position is not None
            assert done.append is not None
            token = str(done.position)
            await subscription.wait_for(Position.parse(token), timeout=20)
            return done.version, done.append.events[-1].event_id in balances.applied

        amounts = {wallet: list(range(1, 9)) for wallet in ids}
        pairs = [(w, a) for w, many in amounts.items() for a in many]
        results = await asyncio.gather(*(deposit_then_query(w, a) for w, a in pairs))
        # Each query saw its own deposit ...
        assert all(seen for _, seen in results)
        assert sorted(version for version, _ in results) == sorted(
            v for _ in ids for v in range(2, 10)
        )
        # ... and every deposit landed exactly once.
        await subscription.wait_for(await store.current_position(), timeout=20)
        assert balances.balance == {w: sum(many) for w, many in amounts.items()}


async def test_a_command_that_raises_no_event_has_no_position(store: EventStore) -> None:
    wallets = AggregateRepository(store, WalletAggregate)
    wallet = uuid4()
    await wallets.execute(wallet, lambda w: w.open("ann"), create=True)
    nothing = await wallets.execute_command(wallet, lambda w: w.state.balance)
    assert (nothing.value, nothing.append, nothing.position, nothing.version) == (0, None, None, 1)
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=FAST) as manager:
        subscription = manager.subscribe(Balances())
        await subscription.wait_for(nothing.position, timeout=1)  # nothing to wait for
