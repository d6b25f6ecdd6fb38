"""The package guide's `repositories/checkpoint.py`: the checkpoint repositories, re-exported
from `eventsource.repositories` (where they live)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.repositories.in_memory import InMemoryCheckpointRepository
from eventsource.repositories.interface import (
    Checkpoint,
    CheckpointData,
    CheckpointRepository,
    LagMetrics,
)

if TYPE_CHECKING:
    from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
    from eventsource.repositories.sqlite import SQLiteCheckpointRepository

__all__ = [
    "Checkpoint",
    "CheckpointData",
    "CheckpointRepository",
    "InMemoryCheckpointRepository",
    "LagMetrics",
    "PostgreSQLCheckpointRepository",
    "SQLiteCheckpointRepository",
]


def __getattr__(name: str) -> Any:
    if name in ("PostgreSQLCheckpointRepository", "SQLiteCheckpointRepository"):
        import eventsource.repositories

        return getattr(eventsource.repositories, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
