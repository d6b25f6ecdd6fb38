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
_VERSION_VARIANT = 0x7 << 76 | 0b10 << 62
"""The version (7) and variant (RFC) bits, at their places."""
_RANDOM_BITS = 0xFFF << 64 | (1 << 62) - 1
"""Where the 74 random bits go: rand_a (12 bits above the variant) and rand_b (62 bits)."""

_new = object.__new__
_set_int = UUID.__dict__["int"].__set__  # UUID's slots, set through their descriptors
_set_safe = UUID.__dict__["is_safe"].__set__
_UNKNOWN = SafeUUID.unknown  # (an Enum member lookup costs more than the rest of an id)
_urandom = os.urandom
_time_ns = time.time_ns
_from_bytes = int.from_bytes

_CHUNK = 16  # bytes of randomness per id (74 bits used: masked in place, no shifting)
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
    end = offset + _CHUNK
    buffer = state.buffer
    if end > len(buffer):
        buffer = state.buffer = _urandom(_CHUNK * _BUFFER_IDS)
        offset, end = 0, _CHUNK
    state.offset = end
    value = (
        (_time_ns() // 1_000_000 & _TIMESTAMP_MASK) << 80
        | _VERSION_VARIANT
        | _from_bytes(buffer[offset:end]) & _RANDOM_BITS
    )
    uuid = _new(UUID)
    _set_int(uuid, value)
    _set_safe(uuid, _UNKNOWN)
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
