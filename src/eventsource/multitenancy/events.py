"""`TenantDomainEvent`: an event that cannot exist without its tenant."""

from __future__ import annotations

from uuid import UUID

from pydantic import Field

from eventsource.events.base import DomainEvent
from eventsource.multitenancy.context import require_current_tenant

__all__ = ["TenantDomainEvent"]


class TenantDomainEvent(DomainEvent, registry=None):
    """Base class of events that belong to a tenant.

    `tenant_id` is required: created inside a `tenant_scope`, an event takes the current
    tenant; outside one, creating it without `tenant_id=` raises `TenantRequiredError`.
    Stored events are read back with the tenant they were written with, whatever the scope.
    """

    tenant_id: UUID = Field(default_factory=require_current_tenant)
