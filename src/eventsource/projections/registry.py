"""`ProjectionRegistry`: several projections behind one handler."""

from __future__ import annotations

from collections.abc import Iterable

from eventsource.events.base import DomainEvent
from eventsource.projections.base import Projection
from eventsource.protocols import EventSubscriber
from eventsource.stores.interface import StoredEvent

__all__ = ["ProjectionRegistry"]


class ProjectionRegistry(Projection):
    """Dispatches each event to the registered projections interested in it, in registration
    order. It is a projection itself, so one subscription (one checkpoint) can feed several
    read models that must move together; give each projection its own subscription instead
    when they should progress, fail and rebuild independently.

    Besides `Projection`s it takes any `EventSubscriber` (an object with `subscribed_to()` and
    `async handle(event)`), which receives the domain event. `dispatch` takes a `StoredEvent`
    or a plain `DomainEvent`; a projection that needs the stored event's position (one that
    keeps its own checkpoint) refuses a plain event with `TypeError`.
    """

    name = "ProjectionRegistry"
    _takes_domain_events = True

    def __init__(
        self,
        projections: Iterable[Projection | EventSubscriber] = (),
        *,
        name: str | None = None,
    ) -> None:
        self._projections: list[Projection | EventSubscriber] = []
        if name is not None:
            self.name = name
        for projection in projections:
            self.register_projection(projection)

    def register_projection(self, projection: Projection | EventSubscriber) -> None:
        name = _name_of(projection)
        if any(_name_of(p) == name for p in self._projections):
            raise ValueError(f"a projection named {name!r} is registered already")
        self._projections.append(projection)

    @property
    def projections(self) -> tuple[Projection | EventSubscriber, ...]:
        return tuple(self._projections)

    def interested_in(self) -> frozenset[str] | None:
        wanted: set[str] = set()
        for projection in self._projections:
            types = _wanted(projection)
            if types is None:
                return None
            wanted |= types
        return frozenset(wanted)

    async def handle(self, stored: StoredEvent | DomainEvent) -> None:
        await self.dispatch(stored)

    async def dispatch(self, event: StoredEvent | DomainEvent) -> None:
        """Hand `event` to each registered projection that wants its type, in order."""
        for projection in self._projections:
            types = _wanted(projection)
            if types is not None and event.event_type not in types:
                continue
            if not isinstance(projection, Projection):
                await projection.handle(event.event if isinstance(event, StoredEvent) else event)
            elif isinstance(event, StoredEvent) or projection._takes_domain_events:
                await projection.handle(event)  # type: ignore[arg-type]
            else:
                raise TypeError(
                    f"projection {projection.name!r} handles stored events (it needs their "
                    "position); dispatch the StoredEvent read from the store, not a plain event"
                )


def _name_of(projection: Projection | EventSubscriber) -> str:
    if isinstance(projection, Projection):
        return projection.name
    return type(projection).__qualname__


def _wanted(projection: Projection | EventSubscriber) -> frozenset[str] | None:
    if isinstance(projection, Projection):
        return projection.interested_in()
    return frozenset(event_type.type_name() for event_type in projection.subscribed_to())
