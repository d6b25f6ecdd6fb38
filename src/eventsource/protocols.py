"""Structural contracts shared across layers.

These are `Protocol`s so that a lower layer can accept what a higher layer (or the user)
provides without importing it. `EventPublisher` lives with the store interface it serves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from eventsource.events.base import DomainEvent

__all__ = ["EventHandler", "SyncEventHandler"]


@runtime_checkable
class EventHandler(Protocol):
    """Anything with `async handle(event)`: projections, bus subscribers, process managers."""

    async def handle(self, event: DomainEvent) -> None: ...


@runtime_checkable
class SyncEventHandler(Protocol):
    """A handler with a plain `handle(event)`, for code that does no I/O."""

    def handle(self, event: DomainEvent) -> None: ...
