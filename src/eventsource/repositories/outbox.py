"""The package guide's `repositories/outbox.py`: the outbox repositories, re-exported from
`eventsource.outbox` (where they live beside the relay and the inbox)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource.outbox import (
    InMemoryOutboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRepository,
    OutboxStats,
)

if TYPE_CHECKING:
    from eventsource.outbox.postgresql import PostgreSQLOutboxRepository
    from eventsource.outbox.sqlite import SQLiteOutboxRepository

__all__ = [
    "InMemoryOutboxRepository",
    "OutboxBatch",
    "OutboxEntry",
    "OutboxRepository",
    "OutboxStats",
    "PostgreSQLOutboxRepository",
    "SQLiteOutboxRepository",
]


def __getattr__(name: str) -> Any:
    if name in ("PostgreSQLOutboxRepository", "SQLiteOutboxRepository"):
        import eventsource.outbox

        return getattr(eventsource.outbox, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
