"""`ProjectionRegistry`: several projections behind one handler."""

from __future__ import annotations

from collections.abc import Iterable

from eventsource.projections.base import Projection
from eventsource.stores.interface import StoredEvent

__all__ = ["ProjectionRegistry"]


class ProjectionRegistry(Projection):
    """Dispatches each event to the registered projections interested in it, in registration
    order. It is a projection itself, so one subscription (one checkpoint) can feed several
    read models that must move together; give each projection its own subscription instead
    when they should progress, fail and rebuild independently."""

    name = "ProjectionRegistry"

    def __init__(self, projections: Iterable[Projection] = (), *, name: str | None = None) -> None:
        self._projections: list[Projection] = []
        if name is not None:
            self.name = name
        for projection in projections:
            self.register_projection(projection)

    def register_projection(self, projection: Projection) -> None:
        if any(p.name == projection.name for p in self._projections):
            raise ValueError(f"a projection named {projection.name!r} is registered already")
        self._projections.append(projection)

    @property
    def projections(self) -> tuple[Projection, ...]:
        return tuple(self._projections)

    def interested_in(self) -> frozenset[str] | None:
        wanted: set[str] = set()
        for projection in self._projections:
            types = projection.interested_in()
            if types is None:
                return None
            wanted |= types
        return frozenset(wanted)

    async def handle(self, stored: StoredEvent) -> None:
        await self.dispatch(stored)

    async def dispatch(self, stored: StoredEvent) -> None:
        for projection in self._projections:
            types = projection.interested_in()
            if types is None or stored.event_type in types:
                await projection.handle(stored)
