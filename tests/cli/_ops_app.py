"""The application the operations commands import in `tests/cli/test_operations.py`
(`--app tests.cli._ops_app:projection` or `:manager`): a projection counting ticks per
stream, which fails on the labels in `FAILING`."""

from __future__ import annotations

import os
from collections import Counter
from uuid import UUID

from eventsource import DomainEvent, SubscriptionConfig, SubscriptionManager
from eventsource.config import (
    create_checkpoint_repository,
    create_dlq_repository,
    create_event_store,
)
from eventsource.projections import Projection
from eventsource.stores import StoredEvent

FAILING: set[str] = set()
"""Labels the handler fails on (a test's poison events)."""


class OpsTicked(DomainEvent):
    label: str


class TickCounts(Projection):
    name = "tick-counts"

    def __init__(self) -> None:
        self.counts: Counter[UUID] = Counter()
        self.labels: list[str] = []

    def interested_in(self) -> frozenset[str]:
        return frozenset({"OpsTicked"})

    async def handle(self, stored: StoredEvent) -> None:
        event = stored.event
        assert isinstance(event, OpsTicked)
        if event.label in FAILING:
            raise RuntimeError(f"cannot count {event.label}")
        self.counts[event.aggregate_id] += 1
        self.labels.append(event.label)

    async def reset(self) -> None:
        self.counts.clear()
        self.labels.clear()


projection = TickCounts()

CONFIG = SubscriptionConfig(max_attempts=1, poll_interval=0.05)


async def manager() -> SubscriptionManager:
    """The application's manager on `$EVENTSOURCE_URL` (an async factory, as `--app` takes)."""
    url = os.environ["EVENTSOURCE_URL"]
    built = SubscriptionManager(
        create_event_store(url),
        create_checkpoint_repository(url),
        create_dlq_repository(url),
        config=CONFIG,
    )
    built.subscribe(projection)
    return built


not_an_app = 42
