"""Snapshots: the `SnapshotStore` interface and its backends.

Backends with a third-party driver are imported on first attribute access, so importing this
package never imports a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.snapshots.in_memory import InMemorySnapshotStore
from eventsource.snapshots.interface import Snapshot, SnapshotStore

if TYPE_CHECKING:
    from eventsource.snapshots.nats import NATSSnapshotStore
    from eventsource.snapshots.postgresql import PostgreSQLSnapshotStore
    from eventsource.snapshots.sqlite import SQLiteSnapshotStore

__all__ = [
    "InMemorySnapshotStore",
    "NATSSnapshotStore",
    "PostgreSQLSnapshotStore",
    "SQLiteSnapshotStore",
    "Snapshot",
    "SnapshotStore",
]

_LAZY = {
    "NATSSnapshotStore": "eventsource.snapshots.nats",
    "PostgreSQLSnapshotStore": "eventsource.snapshots.postgresql",
    "SQLiteSnapshotStore": "eventsource.snapshots.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
