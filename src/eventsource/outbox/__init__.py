"""Transactional outbox (`OutboxRepository`, `OutboxRelay`) and consumer inbox
(`InboxRepository`, `InboxHandler`). The SQLite and PostgreSQL repositories import their
driver on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eventsource.outbox.in_memory import InMemoryInboxRepository, InMemoryOutboxRepository
from eventsource.outbox.inbox import InboxHandler
from eventsource.outbox.interface import (
    InboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRepository,
    OutboxStats,
)
from eventsource.outbox.relay import OutboxRelay

if TYPE_CHECKING:
    from eventsource.outbox.postgresql import (
        PostgreSQLInboxRepository,
        PostgreSQLOutboxRepository,
    )
    from eventsource.outbox.sqlite import SQLiteInboxRepository, SQLiteOutboxRepository

__all__ = [
    "InMemoryInboxRepository",
    "InMemoryOutboxRepository",
    "InboxHandler",
    "InboxRepository",
    "OutboxBatch",
    "OutboxEntry",
    "OutboxRelay",
    "OutboxRepository",
    "OutboxStats",
    "PostgreSQLInboxRepository",
    "PostgreSQLOutboxRepository",
    "SQLiteInboxRepository",
    "SQLiteOutboxRepository",
]

_LAZY = {
    "PostgreSQLInboxRepository": "eventsource.outbox.postgresql",
    "PostgreSQLOutboxRepository": "eventsource.outbox.postgresql",
    "SQLiteInboxRepository": "eventsource.outbox.sqlite",
    "SQLiteOutboxRepository": "eventsource.outbox.sqlite",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
