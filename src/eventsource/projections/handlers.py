"""`EventHandlerBase` and `CheckpointTrackingProjection`: handlers that run outside a
`SubscriptionManager` (fed by an event bus, a test, a script) and still get dispatch by
`@handles`, retries, dead letters and a checkpoint."""

from __future__ import annotations

import asyncio
import inspect
import logging

from eventsource._internal.retry import backoff_delay
from eventsource.events.base import DomainEvent
from eventsource.projections.base import DeclarativeProjection, DeclaredHandlers
from eventsource.protocols import CheckpointStore, DeadLetterSink
from eventsource.stores.interface import StoredEvent

__all__ = ["CheckpointTrackingProjection", "EventHandlerBase"]

logger = logging.getLogger(__name__)


class EventHandlerBase(DeclaredHandlers):
    """Dispatches domain events (not stored ones) to its `@handles` methods, sync or async.

    For handlers fed events directly, such as event-bus subscribers: `await handler.handle(e)`.
    `can_handle(event)` and `handled_types()` tell what it wants; other events are ignored.
    """

    @classmethod
    def handled_types(cls) -> frozenset[str]:
        return frozenset(cls._by_name)

    def can_handle(self, event: DomainEvent) -> bool:
        return event.event_type in self._by_name

    async def handle(self, event: DomainEvent) -> None:
        method = self._by_name.get(event.event_type)
        if method is None:
            return
        outcome = getattr(self, method)(event)
        if outcome is not None and inspect.isawaitable(outcome):
            await outcome


class CheckpointTrackingProjection(DeclarativeProjection):
    """A declarative projection that keeps its own checkpoint, retries and dead letters.

    `handle(stored)` skips events at or before its checkpoint (a redelivery), tries the
    `@handles` method up to `max_attempts` times with exponential backoff and full jitter,
    then parks the event in `dead_letters` (or raises without one), and moves the checkpoint.
    Under a `SubscriptionManager` a plain `DeclarativeProjection` gets all of this from the
    subscription; this class is for projections fed some other way.
    """

    _takes_domain_events = False  # the checkpoint needs the stored event's position

    def __init__(
        self,
        checkpoints: CheckpointStore,
        dead_letters: DeadLetterSink | None = None,
        *,
        max_attempts: int = 3,
        retry_base: float = 0.05,
        retry_cap: float = 5.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.checkpoints = checkpoints
        self.dead_letters = dead_letters
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        self.retry_cap = retry_cap

    async def handle(self, stored: StoredEvent | DomainEvent) -> None:
        if not isinstance(stored, StoredEvent):
            raise TypeError(
                f"{self.name} keeps a checkpoint by position: give handle() the StoredEvent "
                "read from a store, not a plain event"
            )
        checkpoint = await self.checkpoints.get(self.name)
        if checkpoint is not None and stored.position <= checkpoint.position:
            return  # processed already: a redelivery
        for attempt in range(1, self.max_attempts + 1):
            try:
                await super().handle(stored)
                break
            except Exception as exc:
                if attempt < self.max_attempts:
                    await asyncio.sleep(
                        backoff_delay(attempt, base=self.retry_base, cap=self.retry_cap)
                    )
                    continue
                if self.dead_letters is None:
                    raise
                await self.dead_letters.add(self.name, stored, exc, attempt)
                logger.warning(
                    "%s dead-lettered %s %s after %d attempts: %s",
                    self.name,
                    stored.event_type,
                    stored.event_id,
                    attempt,
                    exc,
                )
        await self.checkpoints.save(
            self.name, stored.position, event_id=stored.event_id, event_type=stored.event_type
        )
