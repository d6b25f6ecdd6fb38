"""`ProcessManager`: starts and signals sagas from domain events of the global feed.

It is a `Projection`, so a `SubscriptionManager` runs it (checkpoint, retries, dead letters,
leases across processes). Each routed event is correlated to one saga instance by a key taken
from the event: the saga's id is derived from (saga name, key), so every event about one
order reaches the same saga without a lookup table. Handling is idempotent, which is what an
at-least-once feed needs: a start of an existing saga changes nothing, and a signal is
recorded once per event id (`SagaState.seen_signals`). Steps run in the engine, under the
saga's lock, never in the subscription: a redelivered event cannot run a step twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar
from uuid import UUID, uuid5

from eventsource.events.base import DomainEvent
from eventsource.exceptions import SagaNotFoundError
from eventsource.projections.base import Projection
from eventsource.sagas.definition import Saga
from eventsource.sagas.engine import WorkflowEngine
from eventsource.stores.interface import StoredEvent

__all__ = ["ProcessManager", "saga_id_for"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=DomainEvent)
_NAMESPACE = UUID("6f1d4f3e-8a0b-5c7e-9d21-3b4a5c6d7e8f")


def saga_id_for(saga: Saga | str, key: object) -> UUID:
    """The id of the instance of `saga` correlated by `key` (a UUID version 5)."""
    name = saga if isinstance(saga, str) else saga.name
    return uuid5(_NAMESPACE, f"{name}\x00{key}")


@dataclass(frozen=True, slots=True)
class _Route(Generic[E]):
    key: Callable[[E], object]
    start: bool
    data: Callable[[E], Mapping[str, Any]] | None
    signal: str


class ProcessManager(Projection):
    """Routes domain events to instances of one saga: `starts_on` events start one,
    `signals_on` events signal it (`WorkflowEngine.signal`, `SagaStep(wait_for=...)`).

    A signal for a saga that does not exist (an event about something no saga runs for) is
    skipped with a debug log; make it start the saga instead if it should.
    """

    _takes_domain_events = True

    def __init__(self, engine: WorkflowEngine, saga: Saga, *, name: str | None = None) -> None:
        self.engine = engine
        self.saga = engine.register(saga)
        self.name = name or f"process-manager:{saga.name}"
        self._routes: dict[str, _Route[Any]] = {}

    def starts_on(
        self,
        event_type: type[E],
        *,
        key: Callable[[E], object],
        data: Callable[[E], Mapping[str, Any]] | None = None,
    ) -> Self:
        """An event of `event_type` starts the saga of `key(event)` with `data(event)`."""
        self._routes[event_type.type_name()] = _Route(key, True, data, event_type.type_name())
        return self

    def signals_on(
        self,
        event_type: type[E],
        *,
        key: Callable[[E], object],
        payload: Callable[[E], Mapping[str, Any]] | None = None,
        signal: str | None = None,
    ) -> Self:
        """An event of `event_type` signals the saga of `key(event)`: the signal is named
        `signal` (default: the event type name) and carries `payload(event)`."""
        name = signal or event_type.type_name()
        self._routes[event_type.type_name()] = _Route(key, False, payload, name)
        return self

    def interested_in(self) -> frozenset[str] | None:
        return frozenset(self._routes)

    async def handle(self, stored: StoredEvent | DomainEvent) -> None:
        event = stored.event if isinstance(stored, StoredEvent) else stored
        route = self._routes.get(event.event_type)
        if route is None:
            return
        key = route.key(event)
        saga_id = saga_id_for(self.saga, key)
        values = dict(route.data(event)) if route.data is not None else {}
        if route.start:
            await self.engine.start(self.saga, values, saga_id=saga_id, correlation_key=str(key))
            return
        try:
            await self.engine.signal(saga_id, route.signal, values, source_event_id=event.event_id)
        except SagaNotFoundError:
            logger.debug("%s: no saga for key %r; %s skipped", self.name, key, event.event_type)
