"""Structural contracts shared across layers.

These are `Protocol`s so that a lower layer can accept what a higher layer (or the user)
provides without importing it: checkpoints and dead letters are kept by repositories (layer 3)
but used by subscriptions and projections (layer 2). `EventPublisher` lives with the store
interface it serves.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable
from uuid import UUID

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsource.events.base import DomainEvent
    from eventsource.stores.interface import Position, StoredEvent

__all__ = [
    "CheckpointStore",
    "DeadLetterSink",
    "DeadLetterStatus",
    "EventHandler",
    "EventSubscriber",
    "SyncEventHandler",
]


@runtime_checkable
class EventHandler(Protocol):
    """Anything with `async handle(event)`: projections, bus subscribers, process managers."""

    async def handle(self, event: DomainEvent) -> None: ...


@runtime_checkable
class EventSubscriber(Protocol):
    """A handler that says which event types it wants: `subscribed_to()` lists the event
    classes, `handle(event)` receives each one. A bus subscribes it to each of them
    (`bus.subscribe_all(subscriber)`); a `ProjectionRegistry` dispatches them to it."""

    def subscribed_to(self) -> Sequence[type[DomainEvent]]: ...

    async def handle(self, event: DomainEvent) -> None: ...


@runtime_checkable
class SyncEventHandler(Protocol):
    """A handler with a plain `handle(event)`, for code that does no I/O."""

    def handle(self, event: DomainEvent) -> None: ...


class _Positioned(Protocol):
    @property
    def position(self) -> Position: ...


class CheckpointStore(Protocol):
    """The part of `CheckpointRepository` (layer 3) that subscriptions and projections use."""

    async def get(self, name: str) -> _Positioned | None: ...

    async def save(
        self,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> None: ...

    async def reset(self, name: str, position: Position | None = None) -> None: ...


class _Letter(Protocol):
    @property
    def subscription(self) -> str: ...

    @property
    def event_id(self) -> UUID: ...


class DeadLetterStatus(enum.StrEnum):
    FAILED = "failed"
    """Waiting for someone: the handler gave up on this event."""
    RETRYING = "retrying"
    """Handed back to the handler by a retry; becomes RESOLVED or FAILED again."""
    RESOLVED = "resolved"
    """Processed by a retry, or closed by a person."""


class DeadLetterSink(Protocol):
    """The part of `DLQRepository` subscriptions use: park events, and retry them later."""

    async def add(
        self, subscription: str, stored: StoredEvent, error: BaseException, attempts: int
    ) -> object: ...

    async def get(self, dead_letter_id: UUID) -> _Letter | None: ...

    async def mark_retrying(self, dead_letter_id: UUID) -> bool: ...

    async def resolve(self, dead_letter_id: UUID, *, resolved_by: str) -> bool: ...

    async def count(
        self, subscription: str | None = None, *, status: DeadLetterStatus | None = None
    ) -> int: ...
