"""Who is calling: bearer tokens mapped to tenants, and the tenant rules of the service.

A call's scope is a tenant id (the caller reads and writes only that tenant's events) or None
(every tenant: an administrative token, or a server without tokens). With tokens configured,
a call without `authorization: Bearer <token>` or with an unknown token is refused
(UNAUTHENTICATED). A client may narrow its scope with `x-eventsource-tenant: <uuid>`; a
tenant token may only name its own tenant (else PERMISSION_DENIED).

A stream belongs to the tenant of its first event. The service checks that before reading a
stream or appending to it, and filters every read by the caller's tenant as well, so no
other tenant's event is ever returned.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from eventsource._internal.closing import closing_iterator
from eventsource.exceptions import AuthenticationError, InvalidEventError, PermissionDeniedError
from eventsource.stores.interface import EventStore, ReadOptions, StoredEvent

__all__ = ["TENANT_HEADER", "TokenTable", "stream_owner", "tenant_of"]

TENANT_HEADER = "x-eventsource-tenant"


class TokenTable:
    """Bearer tokens and the tenant each one may act for (None: every tenant)."""

    def __init__(self, tokens: Mapping[str, UUID | None] | None) -> None:
        self._tokens = (
            None
            if tokens is None
            else [(token.encode(), tenant) for token, tenant in tokens.items()]
        )
        if self._tokens is not None and any(not token for token, _ in self._tokens):
            raise ValueError("an empty token would let anyone in: give every token a value")

    @property
    def required(self) -> bool:
        return self._tokens is not None

    def scope(self, metadata: Iterable[tuple[str, Any]]) -> UUID | None:
        """The tenant a call acts for (None: every tenant), or the reason it may not."""
        headers = {key: value for key, value in metadata if isinstance(value, str)}
        tenant: UUID | None = None
        if self._tokens is not None:
            authorization = headers.get("authorization", "")
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationError(
                    "the call carries no bearer token: send `authorization: Bearer <token>`"
                )
            given = token.strip().encode()
            match: list[UUID | None] = []
            for known, known_tenant in self._tokens:  # compare every token: constant time
                if hmac.compare_digest(known, given):
                    match.append(known_tenant)
            if not match:
                raise AuthenticationError("the bearer token is not one this server knows")
            tenant = match[0]
        declared = headers.get(TENANT_HEADER)
        if declared:
            try:
                wanted = UUID(declared)
            except ValueError:
                raise InvalidEventError(f"{TENANT_HEADER} {declared!r} is not a UUID") from None
            if tenant is not None and wanted != tenant:
                raise PermissionDeniedError(
                    f"this token acts for tenant {tenant}, not for tenant {wanted}"
                )
            tenant = wanted
        return tenant


def tenant_of(stored: StoredEvent) -> UUID | None:
    """The tenant of a stored event, from its JSON (the service never decodes events)."""
    try:
        value = json.loads(stored.payload).get("tenant_id")
        return UUID(value) if value else None
    except (ValueError, TypeError, AttributeError):
        return None


async def stream_owner(store: EventStore, aggregate_id: UUID) -> tuple[int, UUID | None]:
    """(version, tenant of its first event) of a stream; (0, None) when it is empty."""
    version = await store.get_stream_version(aggregate_id)
    if version == 0:
        return 0, None
    first = store.read_stream(aggregate_id, ReadOptions(to_version=1, limit=1, batch_size=1))
    async with closing_iterator(first) as events:
        async for stored in events:
            return version, tenant_of(stored)
    return version, None


def check_owner(aggregate_id: UUID, owner: UUID | None, tenant: UUID) -> None:
    if owner != tenant:
        raise PermissionDeniedError(
            f"stream {aggregate_id} belongs to another tenant than {tenant}; "
            "this client may not read or write it"
        )
