"""The SQLite store's table, the rows it reads, and the stored events built from them.

The stored form is lean, as on PostgreSQL (docs/event-stores.md): the payload holds the
event's own fields and the envelope has columns (`correlation_id`, `causation_id` and
`metadata` joined the older ones). A row is lean when its correlation_id is set (every event
has one); rows written before the columns existed keep NULL there and their complete payload,
and read as before. A file created by an older release gets the three columns when a store
first opens it (`upgrade`): nullable, no default, so SQLite only rewrites its schema text.

Ids are TEXT in their canonical form and were valid UUIDs when written, so reading them back
skips `UUID()`'s parsing of other spellings (`_uuid`); a correlation id equal to the event id
(the default) is not parsed twice. Timestamps are fixed-width UTC ISO text, so that SQL
comparisons order them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, SafeUUID

from eventsource._internal.sql import quote_identifier
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.stores._append import EventRecord
from eventsource.stores.interface import StoredEvent

__all__ = [
    "INSERT_COLUMNS",
    "READ_COLUMNS",
    "event_ddl",
    "fetch_row",
    "fetch_rows",
    "record_of",
    "stored_event",
    "stored_events",
    "stream_events",
    "timestamp",
    "upgrade",
]

READ_COLUMNS = (
    "position, event_type, event_version, payload, recorded_at, aggregate_version, event_id,"
    " aggregate_id, aggregate_type, occurred_at, tenant_id, correlation_id, causation_id,"
    " metadata"
)
"""What every read returns: the position, the envelope columns and the payload."""
INSERT_COLUMNS = (
    "event_id, event_type, event_version, aggregate_id, aggregate_type, aggregate_version,"
    " tenant_id, occurred_at, recorded_at, payload, correlation_id, causation_id, metadata"
)
"""The columns an append writes (13 values a row)."""
_LEAN_COLUMNS = (("correlation_id", "TEXT"), ("causation_id", "TEXT"), ("metadata", "TEXT"))


def event_ddl(table: str) -> list[str]:
    """The events table (with the lean columns) and its indexes, if missing."""
    t = quote_identifier(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} ("
        " position INTEGER PRIMARY KEY AUTOINCREMENT,"
        " event_id TEXT NOT NULL UNIQUE,"
        " event_type TEXT NOT NULL,"
        " event_version INTEGER NOT NULL,"
        " aggregate_id TEXT NOT NULL,"
        " aggregate_type TEXT NOT NULL,"
        " aggregate_version INTEGER NOT NULL,"
        " tenant_id TEXT,"
        " occurred_at TEXT NOT NULL,"
        " recorded_at TEXT NOT NULL,"
        " payload TEXT NOT NULL,"
        " correlation_id TEXT,"
        " causation_id TEXT,"
        " metadata TEXT,"
        " UNIQUE (aggregate_id, aggregate_version))",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_type_pos')} "
        f"ON {t} (aggregate_type, position)",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_event_type_pos')} "
        f"ON {t} (event_type, position)",
    ]


def upgrade(conn: sqlite3.Connection, table: str) -> list[str]:
    """Add the lean columns to a table an older release created (run on the connection's
    thread, in a write transaction so that two processes opening one file do not both add
    them); the columns added."""
    t = quote_identifier(table)
    have = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
    missing = [(name, kind) for name, kind in _LEAN_COLUMNS if name not in have]
    if not missing:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
        added = []
        for name, kind in missing:
            if name not in have:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN {name} {kind}")
                added.append(name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return added


def timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so SQL comparisons of the column order correctly."""
    if value.tzinfo is not UTC:  # events hold UTC already: no conversion on the append path
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


_new = object.__new__
_set_int = UUID.__dict__["int"].__set__
_set_safe = UUID.__dict__["is_safe"].__set__
_UNKNOWN = SafeUUID.unknown
_fromisoformat = datetime.fromisoformat


def _uuid(text: str) -> UUID:
    """The UUID of an id column's canonical text (a third cheaper than `UUID(text)`, which
    first strips the other spellings it accepts)."""
    value = _new(UUID)
    _set_int(value, int(text.replace("-", ""), 16))
    _set_safe(value, _UNKNOWN)
    return value


def stored_event(codec: EventCodec, row: Sequence[Any], aggregate_id: UUID | None) -> StoredEvent:
    """The stored event of a row of `READ_COLUMNS` (decoded when its `event` is read);
    `aggregate_id` is the stream's when the caller knows it (a stream read)."""
    return next(stored_events(codec, (row,), aggregate_id))


def stored_events(
    codec: EventCodec, rows: Iterable[Sequence[Any]], aggregate_id: UUID | None
) -> Iterator[StoredEvent]:
    """The stored events of a page of rows, built as the caller consumes them (so each dies
    with its decoded event once the caller moves on); `aggregate_id` is the stream's when
    the caller knows it. The page's aggregate ids are parsed once each (events of one
    aggregate come in runs), positions and recorded_at are built when first read."""
    ids: dict[str, UUID] = {}
    from_row = StoredEvent.from_row
    for row in rows:
        event_text = row[6]
        event_id = _uuid(event_text)
        stream = aggregate_id
        if stream is None:
            stream = ids.get(row[7])
            if stream is None:
                stream = ids[row[7]] = _uuid(row[7])
        correlation = row[11]
        envelope: Any = None
        if correlation is not None:
            tenant, causation = row[10], row[12]
            envelope = (
                _fromisoformat(row[9]),
                None if tenant is None else _uuid(tenant),
                event_id if correlation == event_text else _uuid(correlation),
                None if causation is None else _uuid(causation),
                row[13],
            )
        yield from_row(
            codec,
            (0, row[0]),
            row[4],
            event_id,
            row[1],
            row[2],
            stream,
            row[8],
            row[5],
            row[3],
            envelope,
        )


def fetch_row(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first row of `sql` (None when there is none), its statement finished before the
    hop ends. A statement left open across hops (aiosqlite's `execute`, then `fetchone` in
    another hop) keeps its read transaction open, and the reader connection's next statement,
    another caller's, would share that older snapshot: an append that already returned could
    be missing from it."""
    cursor = conn.execute(sql, params)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def fetch_rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """All rows of `sql`, run on the connection's thread (one hop for a page). The rows
    become stored events or events on the event loop's thread, where the reader is: user
    code (validators, upcasters) never runs on the driver's thread."""
    return conn.execute(sql, params).fetchall()


def stream_events(
    codec: EventCodec, rows: Sequence[Any], aggregate_id: UUID
) -> Iterator[DomainEvent]:
    """The decoded events of a page of a stream read, built straight from the rows as the
    caller consumes them (see `_postgresql_rows.stream_events`)."""
    decode, decode_lean = codec.decode, codec.decode_lean
    for row in rows:
        correlation = row[11]
        if correlation is None:
            yield decode(row[1], row[2], row[3], (0, row[0]))
            continue
        event_text = row[6]
        event_id = _uuid(event_text)
        tenant, causation = row[10], row[12]
        envelope: Any = (  # a LeanEnvelope, as a plain tuple
            _fromisoformat(row[9]),
            None if tenant is None else _uuid(tenant),
            event_id if correlation == event_text else _uuid(correlation),
            None if causation is None else _uuid(causation),
            row[13],
        )
        yield decode_lean(
            row[1],
            row[2],
            row[3],
            event_id,
            aggregate_id,
            row[8],
            row[5],
            envelope,
            (0, row[0]),
        )


def record_of(codec: EventCodec, row: Sequence[Any]) -> EventRecord:
    """A row of `READ_COLUMNS` as `replayed_result` compares it: with its complete JSON."""
    stored = stored_event(codec, row, None)
    return EventRecord.of(
        stored, None if row[10] is None else UUID(row[10]), _fromisoformat(row[9])
    )
