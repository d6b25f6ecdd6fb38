"""Infrastructure failures never end a subscription (DESIGN.md decision 7): a lost store,
checkpoint, dead-letter or read-model connection is retried with backoff, shown as
RECONNECTING, and never dead-letters an event. On every event store; the faults of the
repositories are injected by wrapping the in-memory ones (tests/subscriptions/
test_postgresql_faults.py kills real PostgreSQL connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest

from eventsource import EventStore, Position, StoredEvent
from eventsource.exceptions import StoreConnectionError
from eventsource.repositories import (
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.repositories.interface import Checkpoint, DeadLetter
from eventsource.subscriptions import SubscriptionManager, SubscriptionState
from eventsource.testing import capture_telemetry
from tests._stores import STORE_KINDS, open_event_store
from tests.subscriptions.test_subscriptions import (
    FAST,
    Added,
    append,
    dataclass_replace,
    reaches,
    registry,
)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


def _down(what: str) -> StoreConnectionError:
    return StoreConnectionError(f"{what}: the connection to the database failed (test)")


class FlakyCheckpoints(InMemoryCheckpointRepository):
    """Checkpoints whose database is down while `down` is set."""

    down = False

    async def get(self, name: str) -> Checkpoint | None:
        if self.down:
            raise _down("get checkpoint")
        return await super().get(name)

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None:
        if self.down:
            raise _down("save checkpoint")
        await super().save(
            name, position, event_id=event_id, event_type=event_type, processed=processed
        )


class FlakyDeadLetters(InMemoryDLQRepository):
    """A dead-letter queue whose first `failures` writes fail as if its database were down."""

    failures = 0

    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> DeadLetter:
        if self.failures:
            self.failures -= 1
            raise _down("add dead letter")
        return await super().add(subscription, stored, error, attempts)


async def test_a_handler_losing_its_database_is_retried_never_dead_lettered(
    store: EventStore,
) -> None:
    down = True
    seen: list[int] = []

    async def projector(stored: StoredEvent) -> None:
        if down:
            raise _down("update read model")
        assert isinstance(stored.event, Added)
        seen.append(stored.event.n)

    dead_letters = InMemoryDLQRepository()
    config = dataclass_replace(FAST, max_attempts=1, circuit_breaker=None)
    state = "eventsource.subscription.state"
    with capture_telemetry() as telemetry:
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), dead_letters, config=config
        ) as manager:
            subscription = manager.subscribe(projector, name="projector")
            last = await append(store, *range(5))
            await reaches(subscription, SubscriptionState.RECONNECTING)
            shown = telemetry.value(state, {state: "reconnecting"})
            (health,) = (await manager.health()).subscriptions
            assert health.state is SubscriptionState.RECONNECTING
            assert health.healthy
            assert not health.ready
            assert health.last_error is not None
            assert "update read model" in health.last_error
            down = False
            await subscription.wait_for(last, timeout=10)
            await reaches(subscription, SubscriptionState.LIVE)
    assert shown == 1  # the state metric names the new state
    assert seen == [0, 1, 2, 3, 4]
    assert await dead_letters.count(status=None) == 0
    assert subscription.dead_lettered == 0


async def test_a_failing_dead_letter_write_keeps_the_event_and_tries_again(
    store: EventStore,
) -> None:
    attempts: list[int] = []
    seen: list[int] = []

    async def projector(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Added)
        if stored.event.n == 2:
            attempts.append(2)
            raise ValueError("cannot take 2")
        seen.append(stored.event.n)

    dead_letters = FlakyDeadLetters()
    dead_letters.failures = 3
    config = dataclass_replace(FAST, max_attempts=2, circuit_breaker=None)
    async with SubscriptionManager(
        store, InMemoryCheckpointRepository(), dead_letters, config=config
    ) as manager:
        subscription = manager.subscribe(projector, name="projector")
        await subscription.wait_for(await append(store, *range(5)), timeout=10)
        assert subscription.state is SubscriptionState.LIVE
    assert seen == [0, 1, 3, 4]  # nothing skipped, nothing twice
    # the event was delivered again after each failed write: 2 attempts, 4 times
    assert len(attempts) == 2 * 4
    (letter,) = await dead_letters.list()
    assert (letter.event_type, letter.attempts) == ("Added", 2)
    assert subscription.dead_lettered == 1


async def test_lost_checkpoints_put_the_subscription_in_reconnecting_until_back(
    store: EventStore,
) -> None:
    checkpoints = FlakyCheckpoints()
    checkpoints.down = True
    seen: list[int] = []

    async def projector(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Added)
        seen.append(stored.event.n)

    async with SubscriptionManager(store, checkpoints, config=FAST) as manager:
        subscription = manager.subscribe(projector, name="projector")
        first = await append(store, 1, 2)
        await reaches(subscription, SubscriptionState.RECONNECTING)  # cannot even start
        checkpoints.down = False
        await subscription.wait_for(first, timeout=10)
        checkpoints.down = True  # a batch is handled, its checkpoint cannot be saved
        await reaches(subscription, SubscriptionState.LIVE)
        second = await append(store, 3)
        await reaches(subscription, SubscriptionState.RECONNECTING)
        assert subscription.last_error is not None
        assert "checkpoint: the connection" in subscription.last_error
        checkpoints.down = False
        await subscription.wait_for(await append(store, 4), timeout=10)
        assert subscription.position is not None
        assert subscription.position >= second
    assert seen == [1, 2, 3, 4]  # resumed from what it processed: nothing twice
    saved = await checkpoints.get("projector")
    assert saved is not None
    assert saved.events_processed == 4
