"""Multi-tenancy: the current tenant (`tenant_scope`), events that require one
(`TenantDomainEvent`), and a repository that keeps tenants apart
(`TenantAggregateRepository`). Reads filter by tenant where they are made:
`ReadOptions(tenant_id=...)`, `SubscriptionConfig(tenant_id=...)`,
`EventBusConfig(tenant_id=...)`."""

from eventsource.multitenancy.context import (
    get_current_tenant,
    require_current_tenant,
    reset_current_tenant,
    set_current_tenant,
    tenant_scope,
)
from eventsource.multitenancy.events import TenantDomainEvent
from eventsource.multitenancy.repository import TenantAggregateRepository

__all__ = [
    "TenantAggregateRepository",
    "TenantDomainEvent",
    "get_current_tenant",
    "require_current_tenant",
    "reset_current_tenant",
    "set_current_tenant",
    "tenant_scope",
]
