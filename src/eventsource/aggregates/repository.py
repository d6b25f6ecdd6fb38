"""`AggregateRepository`: load aggregates from their streams, save their new events."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload
from uuid import UUID

from eventsource._internal.retry import backoff_delay
from eventsource.aggregates.base import AggregateRoot
from eventsource.exceptions import AggregateNotFoundError, OptimisticLockError
from eventsource.stores.interface import AppendResult, EventPublisher, EventStore, ReadOptions

__all__ = ["AggregateRepository"]

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]
R = TypeVar("R")

_BACKOFF_BASE = 0.001  # seconds; doubled per retry, full jitter
_BACKOFF_CAP = 0.1


class AggregateRepository(Generic[TAggregate]):
    """Loads and saves one aggregate type through an `EventStore`.

    `save` appends the aggregate's new events expecting the version it was loaded at, so a
    concurrent change raises `OptimisticLockError` instead of being overwritten. `execute`
    runs a command and retries it on such a conflict. With an `event_publisher`, saved
    events are published after the append commits.
    """

    def __init__(
        self,
        event_store: EventStore,
        aggregate_factory: Callable[[UUID], TAggregate],
        aggregate_type: str | None = None,
        event_publisher: EventPublisher | None = None,
        *,
        max_retries: int = 10,
    ) -> None:
        if aggregate_type is None:
            aggregate_type = getattr(aggregate_factory, "aggregate_type", None)
            if not isinstance(aggregate_type, str) or not aggregate_type:
                raise TypeError(
                    "aggregate_type is required when the factory is not an AggregateRoot class"
                )
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.event_store = event_store
        self.aggregate_factory = aggregate_factory
        self.aggregate_type = aggregate_type
        self.event_publisher = event_publisher
        self.max_retries = max_retries

    def create_new(self, aggregate_id: UUID) -> TAggregate:
        """A new, empty aggregate (nothing is stored until it is saved)."""
        return self.aggregate_factory(aggregate_id)

    async def load(self, aggregate_id: UUID) -> TAggregate:
        """The aggregate rebuilt from its events; `AggregateNotFoundError` if it has none."""
        aggregate = await self._load(aggregate_id)
        if aggregate.version == 0:
            raise AggregateNotFoundError(aggregate_id, self.aggregate_type)
        return aggregate

    async def load_or_create(self, aggregate_id: UUID) -> TAggregate:
        """The stored aggregate, or a new one when the stream has no events."""
        return await self._load(aggregate_id)

    async def _load(self, aggregate_id: UUID) -> TAggregate:
        # Events are applied as they arrive: a long stream is never held in memory whole.
        aggregate = self.aggregate_factory(aggregate_id)
        options = ReadOptions(aggregate_type=self.aggregate_type)
        async for stored in self.event_store.read_stream(aggregate_id, options):
            aggregate.apply_event(stored.event, is_new=False)
        return aggregate

    async def exists(self, aggregate_id: UUID) -> bool:
        return await self.event_store.get_stream_version(aggregate_id) > 0

    async def save(self, aggregate: TAggregate) -> AppendResult | None:
        """Append the aggregate's new events; None when there were none to save."""
        events = aggregate.uncommitted_events
        if not events:
            return None
        result = await self.event_store.append_events(
            aggregate.aggregate_id,
            self.aggregate_type,
            events,
            expected_version=aggregate.committed_version,
        )
        aggregate.mark_events_as_committed()
        if self.event_publisher is not None:
            await self.event_publisher.publish(result.events)
        return result

    @overload
    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Awaitable[R]],
        *,
        create: bool = False,
    ) -> R: ...

    @overload
    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], R],
        *,
        create: bool = False,
    ) -> R: ...

    async def execute(
        self,
        aggregate_id: UUID,
        command: Callable[[TAggregate], Any],
        *,
        create: bool = False,
    ) -> Any:
        """Load, run `command(aggregate)`, save; on a version conflict start over.

        The command (sync or async) is rerun on freshly loaded state up to `max_retries`
        times, after a pause with exponential backoff and full jitter (so writers that
        collided do not collide again in lockstep); after that the `OptimisticLockError`
        propagates. With `create=True` a missing aggregate is created instead of raising
        `AggregateNotFoundError`. Returns what the command returned.
        """
        attempt = 0
        while True:
            if create:
                aggregate = await self.load_or_create(aggregate_id)
            else:
                aggregate = await self.load(aggregate_id)
            outcome = command(aggregate)
            if inspect.isawaitable(outcome):
                outcome = await outcome
            try:
                await self.save(aggregate)
            except OptimisticLockError:
                if attempt >= self.max_retries:
                    raise
                attempt += 1
                await asyncio.sleep(backoff_delay(attempt, base=_BACKOFF_BASE, cap=_BACKOFF_CAP))
                continue
            return outcome
