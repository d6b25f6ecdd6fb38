"""`SubscriptionConfig.park_aggregate`: a dead letter parks the later events of its aggregate
(in the dead-letter queue, untried) while other aggregates flow on; retrying it releases
them in order. On every event store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from eventsource import EventStore, Position, StoredEvent
from eventsource.repositories import (
    DeadLetterStatus,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.subscriptions import SubscriptionManager
from tests._stores import STORE_KINDS, open_event_store
from tests.subscriptions.test_subscriptions import FAST, Added, dataclass_replace, registry

PARKING = dataclass_replace(FAST, max_attempts=1, circuit_breaker=None, park_aggregate=True)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    async with open_event_store(request, registry, tmp_path) as opened:
        yield opened


class Ledger:
    """Applies (aggregate, n) pairs; refuses the values in `poison`."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, int]] = []
        self.poison: set[tuple[str, int]] = set()
        self.names: dict[UUID, str] = {}

    async def __call__(self, stored: StoredEvent) -> None:
        assert isinstance(stored.event, Added)
        applied = (self.names[stored.aggregate_id], stored.event.n)
        if applied in self.poison:
            raise ValueError(f"cannot take {applied}")
        self.applied.append(applied)


async def _one(store: EventStore, aggregate: UUID, n: int) -> Position:
    version = await store.get_stream_version(aggregate) if n > 1 else 0
    result = await store.append_events(aggregate, "Account", [Added(n=n)], version)
    assert result.last_position is not None
    return result.last_position


async def test_a_dead_letter_parks_its_aggregate_until_retried(store: EventStore) -> None:
    a, b = uuid4(), uuid4()
    ledger = Ledger()
    ledger.names = {a: "a", b: "b"}
    ledger.poison = {("a", 2)}
    dead_letters = InMemoryDLQRepository()
    checkpoints = InMemoryCheckpointRepository()
    async with SubscriptionManager(store, checkpoints, dead_letters, config=PARKING) as manager:
        subscription = manager.subscribe(ledger, name="ledger")
        await _one(store, a, 1)
        await _one(store, b, 1)
        await _one(store, a, 2)  # dead-lettered: a is parked from here on
        await _one(store, b, 2)
        await _one(store, a, 3)
        await subscription.wait_for(await _one(store, b, 3), timeout=10)
        assert ledger.applied == [("a", 1), ("b", 1), ("b", 2), ("b", 3)]
        letters = await dead_letters.list("ledger")
        assert [(letter.attempts, letter.error.split(":")[0]) for letter in letters] == [
            (1, "ValueError"),
            (0, "AggregateParkedError"),
        ]
    # parked across a restart: the dead-letter queue remembers
    async with SubscriptionManager(store, checkpoints, dead_letters, config=PARKING) as manager:
        subscription = manager.subscribe(ledger, name="ledger")
        await subscription.wait_for(await _one(store, a, 4), timeout=10)
        assert ledger.applied[-1] == ("b", 3)
        assert await dead_letters.count("ledger", status=DeadLetterStatus.FAILED) == 3
        # still failing: nothing is released
        assert await manager.retry_dead_letter(letters[0].id) is False
        assert await dead_letters.count("ledger", status=DeadLetterStatus.FAILED) == 3
        ledger.poison = set()
        assert await manager.retry_dead_letter(letters[0].id) is True
        assert ledger.applied[-3:] == [("a", 2), ("a", 3), ("a", 4)]
        assert await dead_letters.count("ledger", status=DeadLetterStatus.FAILED) == 0
        assert await dead_letters.count("ledger", status=DeadLetterStatus.RESOLVED) == 3
        # released: the aggregate's next event is delivered as usual
        await subscription.wait_for(await _one(store, a, 5), timeout=10)
    assert ledger.applied[-1] == ("a", 5)


def test_parking_needs_a_dead_letter_repository() -> None:
    from eventsource import InMemoryEventStore
    from eventsource.subscriptions import Subscription

    with pytest.raises(ValueError, match="park_aggregate"):
        Subscription(
            "ledger", Ledger(), InMemoryEventStore(), InMemoryCheckpointRepository(), None, PARKING
        )
