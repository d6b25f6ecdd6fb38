"""Repositories of infrastructure state: subscription checkpoints and dead letters (the package
guide's module paths `repositories.checkpoint`, `.dlq`, `.outbox` and `._json` re-export them).

Backends with a third-party driver are imported on first attribute access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.repositories.in_memory import InMemoryCheckpointRepository, InMemoryDLQRepository
from eventsource.repositories.interface import (
    Checkpoint,
    CheckpointData,
    CheckpointRepository,
    DeadLetter,
    DeadLetterStatus,
    DLQEntry,
    DLQRepository,
    DLQStats,
    LagMetrics,
    ProjectionFailureCount,
)

if TYPE_CHECKING:
    from eventsource.repositories.nats import NATSCheckpointRepository
    from eventsource.repositories.postgresql import (
        PostgreSQLCheckpointRepository,
        PostgreSQLDLQRepository,
    )
    from eventsource.repositories.sqlite import SQLiteCheckpointRepository, SQLiteDLQRepository

__all__ = [
    "Checkpoint",
    "CheckpointData",
    "CheckpointRepository",
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DeadLetter",
    "DeadLetterStatus",
    "InMemoryCheckpointRepository",
    "InMemoryDLQRepository",
    "LagMetrics",
    "NATSCheckpointRepository",
    "PostgreSQLCheckpointRepository",
    "PostgreSQLDLQRepository",
    "ProjectionFailureCount",
    "SQLiteCheckpointRepository",
    "SQLiteDLQRepository",
]

_LAZY = {
    "NATSCheckpointRepository": "eventsource.repositories.nats",
    "PostgreSQLCheckpointRepository": "eventsource.repositories.postgresql",
    "PostgreSQLDLQRepository": "eventsource.repositories.postgresql",
    "SQLiteCheckpointRepository": "eventsource.repositories.sqlite",
    "SQLiteDLQRepository": "eventsource.repositories.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
