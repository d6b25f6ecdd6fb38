"""Distributed locks: the `DistributedLock` interface and its backends.

Backends with a third-party driver are imported on first attribute access, so importing this
package never imports a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.exceptions import LockError, LockLostError, LockTimeoutError
from eventsource.locks.in_memory import InMemoryDistributedLock, InMemoryLockHandle
from eventsource.locks.interface import DistributedLock, LockAcquisition, LockHandle

if TYPE_CHECKING:
    from eventsource.locks.postgresql import PostgreSQLDistributedLock, PostgreSQLLockHandle

__all__ = [
    "DistributedLock",
    "InMemoryDistributedLock",
    "InMemoryLockHandle",
    "LockAcquisition",
    "LockError",
    "LockHandle",
    "LockLostError",
    "LockTimeoutError",
    "PostgreSQLDistributedLock",
    "PostgreSQLLockHandle",
]

_LAZY = {
    "PostgreSQLDistributedLock": "eventsource.locks.postgresql",
    "PostgreSQLLockHandle": "eventsource.locks.postgresql",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
