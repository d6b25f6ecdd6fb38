"""The package guide's `repositories/dlq.py`: the dead-letter repositories, re-exported from
`eventsource.repositories` (where they live)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.repositories.in_memory import InMemoryDLQRepository
from eventsource.repositories.interface import (
    DeadLetter,
    DeadLetterStatus,
    DLQEntry,
    DLQRepository,
    DLQStats,
    ProjectionFailureCount,
)

if TYPE_CHECKING:
    from eventsource.repositories.postgresql import PostgreSQLDLQRepository
    from eventsource.repositories.sqlite import SQLiteDLQRepository

__all__ = [
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DeadLetter",
    "DeadLetterStatus",
    "InMemoryDLQRepository",
    "PostgreSQLDLQRepository",
    "ProjectionFailureCount",
    "SQLiteDLQRepository",
]


def __getattr__(name: str) -> Any:
    if name in ("PostgreSQLDLQRepository", "SQLiteDLQRepository"):
        import eventsource.repositories

        return getattr(eventsource.repositories, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
