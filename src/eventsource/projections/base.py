"""Projections: the code that turns events into read models.

A projection says which event types it wants (`interested_in`) and handles one stored event at
a time. Running it (checkpoints, retries, dead letters, live updates) is the job of a
subscription (`eventsource.subscriptions`), so a projection is plain logic, easy to test by
calling `handle` directly.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from eventsource.events.base import DomainEvent
from eventsource.events.handlers import collect_handlers
from eventsource.exceptions import ConfigurationError
from eventsource.stores.interface import StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["DeclarativeProjection", "DeclaredHandlers", "Projection"]


class Projection(ABC):
    """Handles events of the global feed to maintain a read model.

    `name` identifies the projection's checkpoint (default: the class name); keep it stable,
    or the projection starts over. `interested_in()` returns the event type names it wants, or
    None for every event: subscriptions filter the feed with it, in the database where they can.
    """

    name: str = ""
    _takes_domain_events: ClassVar[bool] = False
    """True when `handle` also accepts a plain `DomainEvent` (`ProjectionRegistry.dispatch`)."""

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
    event type name to the method's name; `_with_connection` names the methods that take a
    connection before the event (`def on_x(self, conn, event)`)."""

    _handlers: ClassVar[dict[type[DomainEvent], str]] = {}
    _by_name: ClassVar[dict[str, str]] = {}
    _with_connection: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._handlers = collect_handlers(cls)
        cls._by_name = {event.type_name(): method for event, method in cls._handlers.items()}
        cls._with_connection = frozenset(
            method for method in cls._by_name.values() if _positional(getattr(cls, method)) == 3
        )


def _positional(function: Any) -> int:
    """How many positional parameters `function` takes, `self` included."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    parameters = inspect.signature(function).parameters.values()
    return sum(1 for parameter in parameters if parameter.kind in kinds)


class DeclarativeProjection(DeclaredHandlers, Projection):
    """A projection whose `@handles(EventClass)` methods receive the events they name.

    Handler methods take the event (`def on_x(self, event: X)`), and may be `async def` when
    they do I/O. Only the handled types are delivered: `interested_in` is derived from them.

    A handler may also take a connection first (`async def on_x(self, conn, event: X)`, the
    package guide's form): built with `engine=` (a SQLAlchemy `AsyncEngine` on
    `postgresql+asyncpg://`), the projection runs each such handler in a transaction of its
    own and passes its asyncpg connection (`await conn.execute("... $1", value)`), committed
    when the handler returns and rolled back when it raises. To move the checkpoint in that
    same transaction (exactly-once effects), use `DatabaseProjection`.

    `handle` takes a `StoredEvent` (what subscriptions deliver) or a plain `DomainEvent`.
    """

    engine: AsyncEngine | None = None
    _takes_domain_events = True

    def __init__(self, engine: AsyncEngine | None = None) -> None:
        self.engine = engine

    def interested_in(self) -> frozenset[str] | None:
        return frozenset(self._by_name)

    async def handle(self, stored: StoredEvent | DomainEvent) -> None:
        method = self._by_name.get(stored.event_type)
        if method is None:
            return
        event = stored.event if isinstance(stored, StoredEvent) else stored
        if method in self._with_connection:
            await self._handle_in_transaction(method, event)
            return
        outcome = getattr(self, method)(event)
        if outcome is not None and inspect.isawaitable(outcome):
            await outcome

    async def _handle_in_transaction(self, method: str, event: DomainEvent) -> None:
        if self.engine is None:
            raise ConfigurationError(
                f"{type(self).__qualname__}.{method}() takes a connection, but the projection "
                f"{self.name!r} has no database: construct it with "
                f"{type(self).__qualname__}(engine=...) (a SQLAlchemy AsyncEngine), or drop "
                "the connection parameter"
            )
        async with self.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            transaction = getattr(driver, "transaction", None)
            if transaction is None:
                raise ConfigurationError(
                    f"{type(self).__qualname__}.{method}() takes a connection, which needs a "
                    f"PostgreSQL engine (postgresql+asyncpg://), not {self.engine.url.drivername}"
                    "; use DatabaseProjection for handlers on a SQLAlchemy connection"
                )
            async with transaction():
                outcome = getattr(self, method)(driver, event)
                if outcome is not None and inspect.isawaitable(outcome):
                    await outcome
