"""`TenantAggregateRepository`: an `AggregateRepository` that keeps tenants apart."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from uuid import UUID

from eventsource._internal import telemetry
from eventsource.aggregates.repository import AggregateRepository, TAggregate
from eventsource.events.base import DomainEvent
from eventsource.exceptions import EventNotFoundError, TenantMismatchError
from eventsource.multitenancy.context import require_current_tenant
from eventsource.stores.interface import AppendResult, StoredEvent

__all__ = ["TenantAggregateRepository"]

_MAX_OWNERS = 100_000


class TenantAggregateRepository(AggregateRepository[TAggregate]):
    """Every load and save runs as the current tenant (`tenant_scope`), or raises
    `TenantRequiredError`.

    A stream belongs to the tenant of its events. A load checks the tenant of every event it
    applies, and of the event at the version of the cache entry or snapshot it starts from,
    so an aggregate of another tenant (or events without one) raises `TenantMismatchError`
    before anything is returned or a command runs, whatever commits while the load reads.
    Loads of different tenants never share a single-flight read. Saving into another
    tenant's stream raises `TenantMismatchError`; new events without a tenant are stamped
    with the current one, an event of another tenant is refused. `exists` and `get_event`
    answer for the current tenant's streams only. Same constructor as `AggregateRepository`.
    """

    @functools.cached_property
    def _owners(self) -> dict[UUID, UUID | None]:
        """Stream -> tenant of its first event (a stream never changes tenant). Made on first
        use: no `__init__` here, so type checkers infer the aggregate type from the base's."""
        return {}

    async def _owner(self, aggregate_id: UUID) -> tuple[bool, UUID | None]:
        """(whether the stream has events, the tenant of its first event)."""
        if aggregate_id in self._owners:
            return True, self._owners[aggregate_id]
        # A complete read (not a loop left early): an abandoned read would keep its
        # connection checked out until garbage collection.
        first = (await self.event_store.get_events(aggregate_id, to_version=1)).events
        if not first:
            return False, None
        if len(self._owners) >= _MAX_OWNERS:
            self._owners.clear()
        self._owners[aggregate_id] = first[0].tenant_id
        return True, first[0].tenant_id

    def _tenant(self) -> UUID:
        tenant = require_current_tenant()
        telemetry.annotate(telemetry.TENANT_ID, str(tenant))
        return tenant

    async def _authorize(self, aggregate_id: UUID) -> None:
        # Loads need a tenant; what they read is checked event by event (`_event_check`).
        self._tenant()

    def _flight_key(self, aggregate_id: UUID) -> Hashable:
        return (require_current_tenant(), aggregate_id)

    def _event_check(self) -> Callable[[DomainEvent], None]:
        tenant = require_current_tenant()
        what = self.aggregate_type

        def check(event: DomainEvent) -> None:
            if event.tenant_id != tenant:
                raise TenantMismatchError(f"{what} {event.aggregate_id}", tenant, event.tenant_id)

        return check

    async def _authorize_write(self, aggregate_id: UUID) -> None:
        tenant = self._tenant()
        exists, owner = await self._owner(aggregate_id)
        if exists and owner != tenant:
            raise TenantMismatchError(f"{self.aggregate_type} {aggregate_id}", tenant, owner)

    def _outgoing(self, events: Sequence[DomainEvent]) -> Sequence[DomainEvent]:
        tenant = self._tenant()
        stamped = []
        for event in events:
            if event.tenant_id is None:
                event = event.model_copy(update={"tenant_id": tenant})
            elif event.tenant_id != tenant:
                raise TenantMismatchError(
                    f"event {event.event_type} {event.event_id}", tenant, event.tenant_id
                )
            stamped.append(event)
        return stamped

    async def save(self, aggregate: TAggregate) -> AppendResult | None:
        if aggregate.uncommitted_events:
            await self._authorize_write(aggregate.aggregate_id)
        return await super().save(aggregate)

    async def exists(self, aggregate_id: UUID) -> bool:
        """Whether the stream has events of the current tenant: False for another tenant's
        stream (its existence is not revealed), `TenantRequiredError` outside a scope."""
        tenant = self._tenant()
        found, owner = await self._owner(aggregate_id)
        return found and owner == tenant

    async def get_event(self, event_id: UUID) -> StoredEvent:
        """The stored event with this id if it belongs to the current tenant;
        `EventNotFoundError` otherwise, also for another tenant's event (its existence is not
        revealed), `TenantRequiredError` outside a scope. The store's own `get_event` is not
        tenant-scoped."""
        tenant = self._tenant()
        stored = await self.event_store.get_event(event_id)
        if stored.event.tenant_id != tenant:
            raise EventNotFoundError(event_id)
        return stored
