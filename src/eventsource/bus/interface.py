"""`EventBus`: hands published events to the handlers of every consumer group.

Every bus has the same model, whatever the broker:

- A bus instance is one *consumer* in one *consumer group* (`EventBusConfig.consumer_group`).
  Every group receives every event published; the consumers of one group share its events
  (competing consumers), each event going to one of them.
- Delivery is at least once. A handler that raises is retried with growing delays (only in
  the group whose handler failed) up to `max_attempts`; then the message goes to that group's
  dead-letter destination, with the error, and the group moves on. A retry runs only the
  handlers that have not yet succeeded on the message: the retry copy lists, in a header, the
  handlers (by `handler_id`) that did. A message whose payload
  cannot be read goes there at once. Nothing is dropped.
- A consumer that dies without acknowledging leaves its messages to be redelivered.
- A consumer with a `tenant_id` handles only that tenant's events, in a group of its own per
  tenant (`EventBusConfig.broker_group`): that group receives every event and acknowledges
  other tenants' unread, so consumers of different tenants configured with one group name
  never take each other's messages, and retries and dead letters stay per tenant.

What each broker adds or lacks (ordering scope, duplicates) is in docs/buses.md, and every
backend passes `eventsource.testing.EventBusContract`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol, TypeAlias, TypeVar, cast
from uuid import UUID, uuid4

from eventsource._internal import telemetry
from eventsource._internal.closing import AsyncClosing
from eventsource.bus import _wire
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import ConfigurationError, EventSourceError
from eventsource.protocols import EventHandler, EventSubscriber, SyncEventHandler

__all__ = [
    "AsyncEventHandler",
    "BusDeadLetter",
    "BusStats",
    "EventBus",
    "EventBusConfig",
    "EventHandler",
    "EventHandlerFunc",
    "EventSubscriber",
    "Handler",
    "HandlerOf",
    "HandlesEvent",
    "HandlesEventSync",
    "Outcome",
    "Verdict",
    "handler_ids",
    "invoke_handler",
]

logger = logging.getLogger(__name__)

_TENANT_GROUP_MARK = ".tenant-"
"""What joins `consumer_group` and the tenant id in a tenant consumer's `broker_group`."""

EventHandlerFunc = Callable[[DomainEvent], Awaitable[None] | None]
"""A plain function (sync or async) taking the event."""

Handler = EventHandler | SyncEventHandler | EventHandlerFunc
"""What a bus accepts as a handler: an object with `handle(event)` or a function."""

E = TypeVar("E", bound=DomainEvent)
_E_contra = TypeVar("_E_contra", bound=DomainEvent, contravariant=True)


class HandlesEvent(Protocol[_E_contra]):
    """An object whose `async handle(event)` takes events of one type (or a base of it)."""

    async def handle(self, event: _E_contra, /) -> None: ...


class HandlesEventSync(Protocol[_E_contra]):
    """An object whose plain `handle(event)` takes events of one type (or a base of it)."""

    def handle(self, event: _E_contra, /) -> None: ...


HandlerOf: TypeAlias = HandlesEvent[E] | HandlesEventSync[E] | Callable[[E], Awaitable[None] | None]
"""A handler of events of type `E`: `bus.subscribe(OrderPlaced, handler)` accepts a function or
an object whose `handle` is typed for `OrderPlaced` (or any base class of it)."""


class AsyncEventHandler(ABC):
    """Base class for a handler object: implement `async handle(event)`."""

    @abstractmethod
    async def handle(self, event: DomainEvent) -> None: ...


def default_consumer_name() -> str:
    """Unique per bus instance: host, process id and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid4().hex[:8]}"


@dataclass(kw_only=True)
class EventBusConfig:
    """What every bus has; each backend's `*Config` adds its broker's settings.

    `max_attempts` counts deliveries to the handlers, the first included: with 5, a handler
    that keeps failing runs 5 times, then the message is dead-lettered. Retry `n` waits
    `retry_delay * 2**(n-1)`, at most `retry_delay_max` seconds.
    """

    consumer_group: str = "default"
    consumer_name: str = field(default_factory=default_consumer_name)
    max_attempts: int = 5
    retry_delay: float = 1.0
    retry_delay_max: float = 60.0
    tenant_id: UUID | None = None
    """Handle only this tenant's events. The consumer then joins `broker_group`, the group
    of `consumer_group` for this tenant, which receives every event and acknowledges other
    tenants' unread: consumers of different tenants never compete for a message."""

    def __post_init__(self) -> None:
        if not self.consumer_group:
            raise ValueError("consumer_group must not be empty")
        if _TENANT_GROUP_MARK in self.consumer_group:
            raise ConfigurationError(
                f"consumer_group {self.consumer_group!r} contains {_TENANT_GROUP_MARK!r}, which "
                "names per-tenant groups; choose another name, and set tenant_id for a "
                "consumer of one tenant"
            )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.retry_delay < 0 or self.retry_delay_max < self.retry_delay:
            raise ValueError("retry delays must satisfy 0 <= retry_delay <= retry_delay_max")

    @property
    def broker_group(self) -> str:
        """The consumer group this consumer joins on the broker, after which the group's
        queues, retries and dead letters are named: `consumer_group`, or with `tenant_id`
        set, `{consumer_group}.tenant-{tenant_id}` (one group per tenant)."""
        if self.tenant_id is None:
            return self.consumer_group
        return f"{self.consumer_group}{_TENANT_GROUP_MARK}{self.tenant_id}"

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before delivery attempt `attempt` (2, 3, ...)."""
        return float(min(self.retry_delay_max, self.retry_delay * 2.0 ** max(0, attempt - 2)))


@dataclass
class BusStats:
    """Counters of one bus instance (not of the whole group)."""

    published: int = 0
    received: int = 0
    """Messages taken from the broker, redeliveries included."""
    handled: int = 0
    """Messages whose handlers all succeeded."""
    skipped: int = 0
    """Messages of a type no handler of this consumer wants (acknowledged unread)."""
    failed: int = 0
    """Deliveries in which a handler raised."""
    retried: int = 0
    dead_lettered: int = 0
    recovered: int = 0
    """Messages taken over from a consumer that died without acknowledging them."""


@dataclass(frozen=True)
class BusDeadLetter:
    """A message a consumer group gave up on: kept whole, with why, so it can be replayed."""

    consumer_group: str
    """The group's `broker_group` (with its tenant, for a tenant's consumer)."""
    event_type: str
    event_id: UUID | None
    error: str
    attempts: int
    failed_at: datetime
    body: bytes
    headers: Mapping[str, str]
    event: DomainEvent | None
    """The decoded event, or None when the payload itself is what could not be read."""
    failed_handlers: tuple[str, ...] = ()
    """The ids (`handler_ids`) of the handlers that failed on the last attempt, sorted."""
    handled_by: tuple[str, ...] = ()
    """The ids of the handlers that succeeded on the message before it was given up, sorted."""


class Verdict(Enum):
    """What a consumer does with a message once its handlers ran."""

    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(slots=True)
class Outcome:
    verdict: Verdict
    event: DomainEvent | None = None
    error: BaseException | None = None
    handled: frozenset[str] = frozenset()
    """Ids of the handlers that have succeeded on the message, in this or an earlier attempt."""
    failed: tuple[str, ...] = ()
    """Ids of the handlers that failed in this attempt."""

    @property
    def reason(self) -> str:
        """The error in one line, for the dead-letter headers."""
        if self.error is None:
            return ""
        return f"{type(self.error).__name__}: {self.error}"[:2000]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _name(handler: object) -> str:
    return getattr(handler, "__qualname__", None) or type(handler).__qualname__


def _qualified_name(handler: object) -> str:
    while isinstance(handler, functools.partial):
        handler = handler.func
    module = getattr(handler, "__module__", None) or type(handler).__module__
    return f"{module}.{_name(handler)}"


def handler_ids(handlers: Sequence[object]) -> list[str]:
    """The identity of each handler of a consumer, in order, as retries record it.

    A handler is named by its module and qualified name (a function's, a bound method's, or
    for an object with `handle`, its class's); the second and later handlers with one name get
    `#2`, `#3`, ... in the order they run (those of the event's type first, in subscription
    order, then the wildcard handlers). Ids are stable while a consumer subscribes the same
    handlers in the same order, which is what lets a retry skip the handlers that succeeded.
    """
    seen: Counter[str] = Counter()
    ids: list[str] = []
    for handler in handlers:
        name = _qualified_name(handler)
        seen[name] += 1
        ids.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return ids


class EventBus(AsyncClosing, ABC):
    """Publishes events to a broker and runs this consumer's handlers on what arrives.

    Handlers are functions or objects with `handle(event)`, sync or async::

        bus.subscribe(OrderPlaced, send_confirmation)
        bus.subscribe_to_all_events(audit_log)
        await bus.start_consuming()
        await bus.publish([event])
        ...
        await bus.shutdown()

    An `AggregateRepository(event_publisher=bus)` publishes saved events after the append
    commits; to publish in the same transaction as the append, use the outbox
    (`OutboxRelay`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A bus written as the package guide shows, overriding `publish` itself rather than
        `_publish`, gets a `_publish` that calls its `publish`: one way to send, either name."""
        super().__init_subclass__(**kwargs)
        inherited = getattr(cls, "_publish", None)
        if "publish" in cls.__dict__ and getattr(inherited, "__isabstractmethod__", False):
            overridden = cls.__dict__["publish"]

            async def _publish(self: EventBus, events: Sequence[DomainEvent]) -> None:
                await overridden(self, list(events))

            cls._publish = _publish  # type: ignore[method-assign]

    def __init__(self, config: EventBusConfig, registry: EventRegistry | None = None) -> None:
        self.config = config
        self._codec = EventCodec(registry)
        # The handler table is replaced, never changed in place, under `_table_lock`: any
        # thread may subscribe, and a consumer reads one consistent table without a lock.
        self._by_type: dict[str, tuple[Handler, ...]] = {}
        self._wildcard: tuple[Handler, ...] = ()
        self._table_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop this bus consumes on, once it does: `_subscriptions_changed` runs there."""
        self._background: set[asyncio.Task[None]] = set()
        self.stats = BusStats()
        telemetry.watch("bus", self)

    # -- subscribing ---------------------------------------------------------------------

    def subscribe(self, event_type: type[E], handler: HandlerOf[E]) -> None:
        """Run `handler` for every event of `event_type` this consumer receives. Safe from
        any thread, also while the bus consumes on its event loop."""
        name = event_type.type_name()
        # The table holds handlers of any type; dispatch by type name keeps them apart.
        entry = cast("Handler", handler)
        with self._table_lock:
            handlers = self._by_type.get(name, ())
            if entry in handlers:
                return
            self._by_type = {**self._by_type, name: (*handlers, entry)}
        self._changed()

    def subscribe_all(self, subscriber: EventSubscriber) -> None:
        """Subscribe `subscriber` to each type its `subscribed_to()` names."""
        for event_type in subscriber.subscribed_to():
            self.subscribe(event_type, subscriber)

    def subscribe_to_all_events(self, handler: Handler) -> None:
        """Run `handler` for every event, whatever its type. Safe from any thread."""
        with self._table_lock:
            if handler in self._wildcard:
                return
            self._wildcard = (*self._wildcard, handler)
        self._changed()

    def unsubscribe(self, event_type: type[E], handler: HandlerOf[E]) -> bool:
        """Stop running `handler` for `event_type`; False if it was not subscribed. Safe
        from any thread."""
        name = event_type.type_name()
        with self._table_lock:
            handlers = self._by_type.get(name, ())
            if handler not in handlers:
                return False
            table = dict(self._by_type)
            remaining = tuple(h for h in handlers if h != handler)
            if remaining:
                table[name] = remaining
            else:
                del table[name]
            self._by_type = table
        self._changed()
        return True

    @property
    def subscribed_types(self) -> frozenset[str]:
        """The event type names with a handler, unless a wildcard handler wants everything."""
        return frozenset(self._by_type)

    @property
    def wants_everything(self) -> bool:
        return bool(self._wildcard)

    def _changed(self) -> None:
        """Run `_subscriptions_changed` on the bus's event loop, whichever thread subscribed."""
        loop = self._loop
        if loop is None or _running_loop() is loop:
            self._subscriptions_changed()
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing consumes
            loop.call_soon_threadsafe(self._subscriptions_changed)

    def _subscriptions_changed(self) -> None:
        """Hook for brokers that route by type (RabbitMQ binds the group's queue); runs on
        the bus's event loop (`_loop`, which such a broker sets when it starts consuming)."""

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, events: Sequence[DomainEvent], *, background: bool = False) -> None:
        """Hand `events` to the broker, in order; returns once the broker has accepted them.

        With `background=True` it returns at once; the publish runs in a task that
        `shutdown()` waits for. Raises `BusConnectionError` when the broker cannot be
        reached and `BusPublishError` when it refused the messages.
        """
        if not events:
            return
        if background:
            task = asyncio.create_task(self._traced_publish(list(events)))
            self._background.add(task)
            task.add_done_callback(self._background_done)
            return
        await self._traced_publish(events)

    async def _traced_publish(self, events: Sequence[DomainEvent]) -> None:
        with telemetry.publishing(type(self).__name__, events):
            await self._publish(events)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "background publish on %s failed; its events were not published",
                type(self).__name__,
                exc_info=task.exception(),
            )

    @abstractmethod
    async def _publish(self, events: Sequence[DomainEvent]) -> None:
        """Send `events` and wait for the broker's acknowledgement; count them in stats."""

    # -- handling (shared by every backend's consumer loop) --------------------------------

    def _wants(self, event_type: str) -> bool:
        return bool(self._wildcard) or event_type in self._by_type

    async def _handle_message(
        self, headers: Mapping[str, str], body: bytes, attempt: int, origin: object
    ) -> Outcome:
        """Run this consumer's handlers on one message and say what to do with it.

        A type nobody here wants is acknowledged unread. A payload that cannot be read is
        dead-lettered at once (retrying cannot fix it). If a handler raises (all handlers
        run even so), the message is retried until `max_attempts`, then dead-lettered; a
        retry of this group (`attempt` > 1) skips the handlers its headers list as done.
        """
        self.stats.received += 1
        event_type = _wire.event_type_of(headers)
        tenant = self.config.tenant_id
        if (event_type and not self._wants(event_type)) or (
            tenant is not None and headers.get(_wire.TENANT_ID) != str(tenant)
        ):
            self.stats.skipped += 1
            return Outcome(Verdict.ACK)
        try:
            event = _wire.decode(self._codec, headers, body, origin)
        except EventSourceError as exc:
            self.stats.dead_lettered += 1
            logger.error("message %s cannot be read; dead-lettering it: %s", origin, exc)
            return Outcome(Verdict.DEAD, None, exc)
        handlers = [*self._by_type.get(event.event_type, ()), *self._wildcard]
        if not handlers:
            self.stats.skipped += 1
            return Outcome(Verdict.ACK, event)
        done: frozenset[str] = frozenset()
        if attempt > 1 and headers.get(_wire.GROUP) == self.config.broker_group:
            done = _wire.listed_handlers(headers, _wire.HANDLED_BY)
        handled, failed = set(done), list[str]()
        error: BaseException | None = None
        with telemetry.consuming(self.config.consumer_group, headers, event) as span:
            for handler, handler_id in zip(handlers, handler_ids(handlers), strict=True):
                if handler_id in done:
                    continue
                try:
                    await invoke_handler(handler, event)
                    handled.add(handler_id)
                except Exception as exc:
                    failed.append(handler_id)
                    logger.warning(
                        "handler %s failed on %s %s (attempt %d of %d): %r",
                        handler_id,
                        event.event_type,
                        event.event_id,
                        attempt,
                        self.config.max_attempts,
                        exc,
                    )
                    span.fail(exc)
                    error = error or exc
        if error is None:
            self.stats.handled += 1
            return Outcome(Verdict.ACK, event)
        self.stats.failed += 1
        verdict = Verdict.RETRY if attempt < self.config.max_attempts else Verdict.DEAD
        if verdict is Verdict.RETRY:
            self.stats.retried += 1
        else:
            self.stats.dead_lettered += 1
        return Outcome(verdict, event, error, frozenset(handled), tuple(failed))

    def _handler_headers(self, outcome: Outcome) -> dict[str, str]:
        """Which handlers succeeded and which failed, for a retry or a dead letter."""
        if outcome.event is None:
            return {}
        return {
            _wire.HANDLED_BY: _wire.list_handlers(outcome.handled),
            _wire.FAILED_HANDLERS: _wire.list_handlers(outcome.failed),
        }

    def _dead_letter_headers(
        self, headers: Mapping[str, str], outcome: Outcome, attempts: int
    ) -> dict[str, str]:
        """The headers a message keeps in the dead-letter destination: why, where, how often."""
        return {
            **headers,
            **self._handler_headers(outcome),
            _wire.ERROR: outcome.reason,
            _wire.GROUP: self.config.broker_group,
            _wire.ATTEMPT: str(attempts),
        }

    def _retry_headers(
        self, headers: Mapping[str, str], outcome: Outcome, attempt: int
    ) -> dict[str, str]:
        """The headers of a message sent back for delivery attempt `attempt`: with the
        handlers that succeeded, so that the retry runs only the others."""
        return {
            **headers,
            **self._handler_headers(outcome),
            _wire.GROUP: self.config.broker_group,
            _wire.ATTEMPT: str(attempt),
        }

    def _read_dead_letter(
        self, headers: Mapping[str, str], body: bytes, at: datetime
    ) -> BusDeadLetter:
        """A `BusDeadLetter` for a message read back from a dead-letter destination."""
        event: DomainEvent | None
        try:
            event = _wire.decode(self._codec, headers, body, "dead letter")
        except EventSourceError:
            event = None
        event_id = headers.get(_wire.EVENT_ID)
        return BusDeadLetter(
            consumer_group=headers.get(_wire.GROUP, self.config.broker_group),
            event_type=_wire.event_type_of(headers),
            event_id=UUID(event_id) if event_id else None,
            error=headers.get(_wire.ERROR, ""),
            attempts=int(headers.get(_wire.ATTEMPT, "1")),
            failed_at=at,
            body=body,
            headers=dict(headers),
            event=event,
            failed_handlers=tuple(sorted(_wire.listed_handlers(headers, _wire.FAILED_HANDLERS))),
            handled_by=tuple(sorted(_wire.listed_handlers(headers, _wire.HANDLED_BY))),
        )

    # -- consuming -----------------------------------------------------------------------

    @abstractmethod
    async def start_consuming(self) -> None:
        """Join the consumer group and start handling messages in the background.

        Returns once this consumer is registered with the broker: events published from then
        on reach the group (and those published earlier, if the group already existed).
        """

    @abstractmethod
    async def stop_consuming(self) -> None:
        """Stop taking messages; those being handled finish and are acknowledged first."""

    @abstractmethod
    async def abort(self) -> None:
        """Stop at once, as a crashed process would: handlers in flight are cancelled and
        their messages are not acknowledged, so the broker redelivers them to another
        consumer of the group (or to this one when it starts again)."""

    @property
    @abstractmethod
    def consuming(self) -> bool:
        """True between `start_consuming()` and `stop_consuming()`/`abort()`."""

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
        """The messages this consumer group gave up on, oldest first."""

    async def shutdown(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 (bounds one step)
        """Wait up to `timeout` seconds for background publishes, stop consuming, close."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=timeout)
        await self.stop_consuming()
        await self.close()

    async def close(self) -> None:
        """Cancel what is left of background publishes and release the connections."""
        telemetry.unwatch("bus", self)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


async def invoke_handler(handler: Any, event: DomainEvent) -> None:
    """Call a bus handler (function or object with `handle`, sync or async) on `event`."""
    method = getattr(handler, "handle", None)
    result = method(event) if method is not None else handler(event)
    if inspect.isawaitable(result):
        await result
