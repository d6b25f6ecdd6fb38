"""Projections: the code that turns events into read models.

A projection says which event types it wants (`interested_in`) and handles one stored event at
a time. Running it (checkpoints, retries, dead letters, live updates) is the job of a
subscription (`eventsource.subscriptions`), so a projection is plain logic, easy to test by
calling `handle` directly.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from eventsource.events.base import DomainEvent
from eventsource.events.handlers import collect_handlers
from eventsource.stores.interface import StoredEvent

__all__ = ["DeclarativeProjection", "DeclaredHandlers", "Projection"]


class Projection(ABC):
    """Handles events of the global feed to maintain a read model.

    `name` identifies the projection's checkpoint (default: the class name); keep it stable,
    or the projection starts over. `interested_in()` returns the event type names it wants, or
    None for every event: subscriptions filter the feed with it, in the database where they can.
    """

    name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):
            cls.name = cls.__name__

    def interested_in(self) -> frozenset[str] | None:
        return None

    @abstractmethod
    async def handle(self, stored: StoredEvent) -> None:
        """Apply one event. Raise to have it retried (and dead-lettered in the end)."""

    async def reset(self) -> None:  # noqa: B027 - a hook with a meaningful default
        """Forget the read model before a rebuild replays the feed from the beginning.

        The default keeps everything, which suits projections whose handlers overwrite
        (upserts); override it to clear tables or dicts the replay will fill again.
        """


class DeclaredHandlers:
    """Collects a class's `@handles` methods when the class is created: `_by_name` maps an
    event type name to the method's name."""

    _handlers: ClassVar[dict[type[DomainEvent], str]] = {}
    _by_name: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = collect_handlers(cls)
        cls._by_name = {event.type_name(): method for event, method in cls._handlers.items()}


class DeclarativeProjection(DeclaredHandlers, Projection):
    """A projection whose `@handles(EventClass)` methods receive the events they name.

    Handler methods take the event (`def on_x(self, event: X)`), and may be `async def` when
    they do I/O. Only the handled types are delivered: `interested_in` is derived from them.
    """

    def interested_in(self) -> frozenset[str] | None:
        return frozenset(self._by_name)

    async def handle(self, stored: StoredEvent) -> None:
        method = self._by_name.get(stored.event_type)
        if method is None:
            return
        outcome = getattr(self, method)(stored.event)
        if outcome is not None and inspect.isawaitable(outcome):
            await outcome
