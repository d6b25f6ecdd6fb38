"""`TenantAggregateRepository`: an `AggregateRepository` that keeps tenants apart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsource._internal import telemetry
from eventsource.aggregates.repository import AggregateRepository, TAggregate
from eventsource.events.base import DomainEvent
from eventsource.exceptions import TenantMismatchError
from eventsource.multitenancy.context import require_current_tenant
from eventsource.stores.interface import AppendResult

__all__ = ["TenantAggregateRepository"]

_MAX_OWNERS = 100_000


class TenantAggregateRepository(AggregateRepository[TAggregate]):
    """Every load and save runs as the current tenant (`tenant_scope`), or raises
    `TenantRequiredError`.

    A stream belongs to the tenant of its first event. Loading (also through `execute`, the
    cache, snapshots or a shared single-flight load) or saving an aggregate of another tenant
    raises `TenantMismatchError`. New events without a tenant are stamped with the current
    one; an event of another tenant is refused. Same constructor as `AggregateRepository`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owners: dict[UUID, UUID | None] = {}
        """Stream -> tenant of its first event (a stream never changes tenant)."""

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

    async def _authorize(self, aggregate_id: UUID) -> None:
        tenant = require_current_tenant()
        telemetry.annotate(telemetry.TENANT_ID, str(tenant))
        exists, owner = await self._owner(aggregate_id)
        if exists and owner != tenant:
            raise TenantMismatchError(f"{self.aggregate_type} {aggregate_id}", tenant, owner)

    def _outgoing(self, events: Sequence[DomainEvent]) -> Sequence[DomainEvent]:
        tenant = require_current_tenant()
        telemetry.annotate(telemetry.TENANT_ID, str(tenant))
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
            await self._authorize(aggregate.aggregate_id)
        return await super().save(aggregate)
