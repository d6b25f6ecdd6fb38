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

Reads cost about a tenth of a microsecond per column and row, whatever the column holds, so
they select few: the four envelope columns most events leave at their defaults come as one
(`_EXTRAS`: NULL for such a row), and the columns a read can do without (recorded_at for a
load, aggregate_id for a stream read) come last, so every read's rows share one layout.
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
    "LOAD_COLUMNS",
    "READ_COLUMNS",
    "STREAM_COLUMNS",
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

_EXTRAS = (
    "CASE WHEN correlation_id = event_id AND tenant_id IS NULL AND causation_id IS NULL"
    " AND metadata IS NULL THEN NULL ELSE ifnull(correlation_id, '') || '|'"
    " || ifnull(tenant_id, '') || '|' || ifnull(causation_id, '') || '|'"
    " || ifnull(metadata, '') END"
)
"""The four envelope columns most rows leave at their default, read as one: NULL for a lean
row whose correlation id is its event id and that has no tenant, causation or metadata (the
common row), else `correlation|tenant|causation|metadata` with '' for NULL (ids never hold
a '|', the metadata comes last), so a row written before the lean form starts with '|'
(`_extras` splits the others)."""
LOAD_COLUMNS = (
    "position, event_type, event_version, payload, aggregate_version, event_id,"
    f" aggregate_type, occurred_at, {_EXTRAS}"
)
"""What a load (`stream_events`) reads: it knows its stream and never reads recorded_at."""
STREAM_COLUMNS = f"{LOAD_COLUMNS}, recorded_at"
"""What a stream read returns: it knows its stream's aggregate id."""
READ_COLUMNS = f"{STREAM_COLUMNS}, aggregate_id"
"""What every other read returns: the position, the envelope columns and the payload. The
columns some reads leave out come last, so every read's rows share one layout."""
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
        event_text = row[5]
        event_id = _uuid(event_text)
        stream = aggregate_id
        if stream is None:
            stream = ids.get(row[10])
            if stream is None:
                stream = ids[row[10]] = _uuid(row[10])
        extras = row[8]
        envelope: Any  # a LeanEnvelope, as a plain tuple; None: a complete row
        if extras is None:
            envelope = (_fromisoformat(row[7]), None, event_id, None, None)
        else:
            envelope = _extras(extras, row[7], event_id, event_text)
        yield from_row(
            codec,
            (0, row[0]),
            row[9],
            event_id,
            row[1],
            row[2],
            stream,
            row[6],
            row[4],
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
        extras = row[8]
        event_text = row[5]
        event_id = _uuid(event_text)
        envelope: Any  # a LeanEnvelope, as a plain tuple
        if extras is None:
            envelope = (_fromisoformat(row[7]), None, event_id, None, None)
        else:
            envelope = _extras(extras, row[7], event_id, event_text)
            if envelope is None:
                yield decode(row[1], row[2], row[3], (0, row[0]))
                continue
        yield decode_lean(
            row[1],
            row[2],
            row[3],
            event_id,
            aggregate_id,
            row[6],
            row[4],
            envelope,
            (0, row[0]),
        )


def _extras(
    extras: str, occurred_at: str, event_id: UUID, event_text: str
) -> tuple[datetime, UUID | None, UUID, UUID | None, str | None] | None:
    """The lean envelope of a row whose `_EXTRAS` column is not NULL; None for a row
    written before the lean form (no correlation id: its payload is complete)."""
    correlation, tenant, causation, metadata = extras.split("|", 3)
    if not correlation:
        return None
    return (
        _fromisoformat(occurred_at),
        _uuid(tenant) if tenant else None,
        event_id if correlation == event_text else _uuid(correlation),
        _uuid(causation) if causation else None,
        metadata or None,
    )


def record_of(codec: EventCodec, row: Sequence[Any]) -> EventRecord:
    """A row of `READ_COLUMNS` as `replayed_result` compares it: with its complete JSON."""
    stored = stored_event(codec, row, None)
    extras = row[8]
    tenant = None if extras is None else extras.split("|", 3)[1]
    return EventRecord.of(stored, UUID(tenant) if tenant else None, _fromisoformat(row[7]))
