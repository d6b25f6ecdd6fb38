"""Handlers that receive opened events while everything around them keeps the sealed form.

A subscription reads the wrapped (sealed) store, so a dead letter of a failing event keeps
ciphertext; `OpenedProjection` opens each event just before the projection sees it. A bus
delivers sealed messages; `OpenedHandler` opens them for an `EventHandler`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from eventsource.events.base import DomainEvent
from eventsource.exceptions import ConfigurationError
from eventsource.gdpr.vault import PersonalDataVault
from eventsource.projections.base import Projection
from eventsource.projections.database import DatabaseProjection
from eventsource.protocols import EventHandler, SyncEventHandler
from eventsource.stores.interface import StoredEvent

__all__ = ["OpenedHandler", "OpenedProjection"]


class OpenedProjection(Projection):
    """`projection`, fed opened events: same name (checkpoint), interest and reset.

    A `DatabaseProjection` (pages in one transaction with its checkpoint) cannot be wrapped:
    `ConfigurationError`.
    """

    def __init__(self, projection: Projection, vault: PersonalDataVault) -> None:
        if isinstance(projection, DatabaseProjection):
            raise ConfigurationError(
                f"{type(projection).__name__} is a DatabaseProjection, whose pages and "
                "checkpoint share a transaction: OpenedProjection cannot wrap it. Use a "
                "ReadModelProjection or a DeclarativeProjection for read models of personal data"
            )
        self.projection = projection
        self.vault = vault
        self.name = projection.name

    def interested_in(self) -> frozenset[str] | None:
        return self.projection.interested_in()

    async def handle(self, stored: StoredEvent) -> None:
        [event] = await self.vault.open([stored.event])
        if event is not stored.event:
            stored = StoredEvent(event, stored.position, stored.recorded_at)
        await self.projection.handle(stored)

    async def reset(self) -> None:
        await self.projection.reset()


class OpenedHandler:
    """An `EventHandler` (async or sync `handle(event)`) fed opened events, for buses."""

    def __init__(self, handler: EventHandler | SyncEventHandler, vault: PersonalDataVault) -> None:
        self.handler = handler
        self.vault = vault

    def subscribed_to(self) -> Sequence[type[DomainEvent]]:
        """The wrapped handler's event classes (for `bus.subscribe_all`)."""
        subscribed = getattr(self.handler, "subscribed_to", None)
        if subscribed is None:
            raise ConfigurationError(
                f"{type(self.handler).__name__} has no subscribed_to(): subscribe the "
                "OpenedHandler to event types one by one"
            )
        result: Sequence[type[DomainEvent]] = subscribed()
        return result

    async def handle(self, event: DomainEvent) -> None:
        [opened] = await self.vault.open([event])
        result = self.handler.handle(opened)
        if inspect.isawaitable(result):
            await result
