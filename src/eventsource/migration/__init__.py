"""Live store migration: copy an application's events from one event store into another
(SQLite to PostgreSQL, one PostgreSQL to another, one tenant at a time) while it keeps
writing, then verify, map subscriptions' checkpoints and cut over.

`StoreMigration` copies (resumable, idempotent, order-keeping; see `copier`), reports sync
lag (`status`), maps checkpoints (`map_checkpoints`) and verifies (`verify`, per-stream
counts and checksums). It speaks only the public `EventStore` interface, so it works between
any two backends, and copies stored rows, not decoded classes (see `_rows`). The
`eventsource migrate` command drives it. Guide: docs/migration.md.
"""

from eventsource.migration.copier import (
    CopyProgress,
    MappedCheckpoint,
    MigrationStatus,
    StoreMigration,
)
from eventsource.migration.verify import StreamDifference, VerificationReport

__all__ = [
    "CopyProgress",
    "MappedCheckpoint",
    "MigrationStatus",
    "StoreMigration",
    "StreamDifference",
    "VerificationReport",
]
