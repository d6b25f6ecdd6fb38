"""Projections: the code that turns events into read models.

A projection says which event types it wants (`interested_in`) and handles one stored event at
a time. Running it (checkpoints, retries, dead letters, live updates) is the job of a
subscription (`eventsource.subscriptions`), so a projection is plain logic, easy to test by
calling `handle` directly.

`EventHandlerBase` and `CheckpointTrackingProjection` are for handlers that run outside a
`SubscriptionManager` (fed by an event bus, a test, a script) and still get dispatch by
`@handles`, retries, dead letters and a checkpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from eventsource._internal.retry import backoff_delay
from eventsource.events.base import DomainEvent
from eventsource.events.handlers import collect_handlers
from eventsource.exceptions import ConfigurationError
from eventsource.protocols import CheckpointStore, DeadLetterSink
from eventsource.stores.interface import StoredEvent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CheckpointTrackingProjection",
    "DeclarativeProjection",
    "DeclaredHandlers",
    "EventHandlerBase",
    "Projection",
]

logger = logging.getLogger(__name__)


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
