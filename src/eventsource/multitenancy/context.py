"""The current tenant: a `ContextVar`, so it follows a request through every `await` and
every task created inside it, and never leaks to concurrent requests."""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType
from uuid import UUID

from eventsource.exceptions import TenantError, TenantRequiredError

__all__ = [
    "get_current_tenant",
    "require_current_tenant",
    "reset_current_tenant",
    "set_current_tenant",
    "tenant_scope",
]

_current: ContextVar[UUID | None] = ContextVar("eventsource_tenant", default=None)
_entries: ContextVar[tuple[tuple[tenant_scope, Token[UUID | None]], ...]] = ContextVar(
    "eventsource_tenant_scopes", default=()
)
"""The scopes entered in this context, innermost last, with the token each entry got."""


def get_current_tenant() -> UUID | None:
    """The tenant of the current scope, or None outside any."""
    return _current.get()


def require_current_tenant() -> UUID:
    """The tenant of the current scope; `TenantRequiredError` outside any."""
    tenant = _current.get()
    if tenant is None:
        raise TenantRequiredError(
            "no current tenant: run this inside `with tenant_scope(tenant_id):` (or `async with`)"
        )
    return tenant


def set_current_tenant(tenant_id: UUID | None) -> Token[UUID | None]:
    """Set the current tenant until `reset_current_tenant(token)` (prefer `tenant_scope`)."""
    if tenant_id is not None and not isinstance(tenant_id, UUID):
        raise TypeError(f"a tenant id is a UUID, not {type(tenant_id).__name__}")
    return _current.set(tenant_id)


def reset_current_tenant(token: Token[UUID | None]) -> None:
    _current.reset(token)


class tenant_scope:
    """Run a block as `tenant_id`, with `with` or `async with`; scopes nest, and the outer
    tenant is back when the block ends (also when it raises).

    One scope object may be entered by several tasks or threads at once (a module-level
    `scope = tenant_scope(acme)` used by concurrent requests): each entry is remembered in
    the context that made it, so each exit restores what its own entry replaced.
    """

    def __init__(self, tenant_id: UUID) -> None:
        if not isinstance(tenant_id, UUID):
            raise TypeError(f"a tenant id is a UUID, not {type(tenant_id).__name__}")
        self.tenant_id = tenant_id

    def __enter__(self) -> UUID:
        token = _current.set(self.tenant_id)
        _entries.set((*_entries.get(), (self, token)))
        return self.tenant_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = _entries.get()
        for index in range(len(entries) - 1, -1, -1):
            scope, token = entries[index]
            if scope is self:
                _entries.set(entries[:index] + entries[index + 1 :])
                _current.reset(token)
                return
        raise TenantError(
            f"tenant_scope({self.tenant_id}) exited in a context that did not enter it: "
            "enter and exit a scope in the same task or thread"
        )

    async def __aenter__(self) -> UUID:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
