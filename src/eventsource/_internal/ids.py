"""Event ids: UUIDv7 (RFC 9562).

Time-ordered ids keep the event-id index of a database growing at its right edge instead of
writing all over it (random UUIDv4 keys). They are cheap to make: the random bits come from
the OS's generator a few kilobytes at a time (a fresh buffer after `fork`, so processes never
share bits), and the UUID is built without `UUID.__init__`'s argument checks.
"""

from __future__ import annotations

import os
import threading
import time
from uuid import UUID, SafeUUID, uuid5

__all__ = ["TENANT_NAMESPACE", "tenant_uuid", "uuid7"]

_TIMESTAMP_MASK = (1 << 48) - 1
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_B_MASK = (1 << 62) - 1

_new = object.__new__
_set = object.__setattr__
_urandom = os.urandom
_time_ns = time.time_ns
_from_bytes = int.from_bytes

_CHUNK = 10  # bytes of randomness per id (74 bits used)
_BUFFER_IDS = 512


class _Randomness(threading.local):
    """Per-thread buffer of OS randomness (threads never hand out the same bytes)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0


_random = _Randomness()


def _forget_after_fork() -> None:
    global _random
    _random = _Randomness()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def uuid7() -> UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    state = _random
    offset = state.offset
    if offset + _CHUNK > len(state.buffer):
        state.buffer, offset = _urandom(_CHUNK * _BUFFER_IDS), 0
    rand = _from_bytes(state.buffer[offset : offset + _CHUNK])
    state.offset = offset + _CHUNK
    value = (
        ((_time_ns() // 1_000_000) & _TIMESTAMP_MASK) << 80
        | _VERSION
        | (rand >> 68) << 64
        | _VARIANT
        | (rand & _RAND_B_MASK)
    )
    uuid = _new(UUID)
    _set(uuid, "int", value)
    _set(uuid, "is_safe", SafeUUID.unknown)
    return uuid


TENANT_NAMESPACE = UUID("6f0c2f1e-5a7b-5d0e-9b8a-2c3e4f5a6b7c")
"""The namespace of `tenant_uuid`: a tenant named "acme" is `uuid5(TENANT_NAMESPACE, "acme")`."""


def tenant_uuid(tenant: str | UUID) -> UUID:
    """The tenant id of a tenant given by name or id (UUID text is read as that UUID)."""
    if isinstance(tenant, UUID):
        return tenant
    try:
        return UUID(tenant)
    except ValueError:
        return uuid5(TENANT_NAMESPACE, tenant)
