"""The rows the PostgreSQL store reads, and the stored events built from them.

Every read returns the same columns (`READ_COLUMNS`), typed by asyncpg, so one function turns
any row into a `StoredEvent`. A lean row (correlation_id set, written since migration 0008)
holds the event's own fields in its payload and the envelope in columns; an older row holds
the complete event in its payload and its correlation_id is NULL. What the columns cost was
measured: each one adds to every row of every read, and asyncpg builds a datetime from a
binary timestamptz at 1 to 2 us, so timestamps travel as epoch seconds instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec, utc_from_epoch
from eventsource.stores._append import EventRecord
from eventsource.stores.interface import StoredEvent

__all__ = [
    "FIRST_STREAM_PAGE",
    "LOAD_COLUMNS",
    "READ_COLUMNS",
    "STREAM_COLUMNS",
    "record_of",
    "stored_event",
    "stream_events",
]

_EPOCH = "date_part('epoch', {})"
"""A timestamptz as float8 Unix epoch seconds, read back with `utc_from_epoch` (exact to the
microsecond): about a tenth of what a binary timestamp costs to send and convert."""
_CARRIED = (
    "occurred_at >= timestamptz '1970-01-01 00:00:00+00'"
    " AND occurred_at < timestamptz '2106-02-07 06:28:16+00'"
)
"""Times a float8 of epoch seconds carries exactly (`_postgresql_columns.EXACT_EPOCH`)."""
_EXACT = "to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
"""Any other time, as UTC ISO text (`_exact`): asyncpg would decode -infinity and infinity,
what it writes for datetime.min and datetime.max, as naive datetimes."""
READ_COLUMNS = (
    "transaction_id, position, event_type, event_version, payload::text,"
    f" {_EPOCH.format('recorded_at')}, aggregate_version, event_id, aggregate_id,"
    f" aggregate_type, CASE WHEN {_CARRIED} THEN {_EPOCH.format('occurred_at')} END,"
    " tenant_id, NULLIF(correlation_id, event_id), causation_id, metadata::text,"
    f" correlation_id IS NULL, CASE WHEN {_CARRIED} THEN NULL ELSE {_EXACT} END"
)
"""What every read returns: the envelope columns and the payload. The correlation id comes
NULL when it is the event id (the default: most rows), and the last column says whether the
row is an older, complete one (its correlation_id is NULL). asyncpg makes every uuid it
decodes an object the garbage collector tracks, and a page's rows all live until the page
is done: the duplicate id made the collector run a third more often on a load. occurred_at
comes as epoch seconds when a float8 carries it exactly (nearly always), else (the last
column) as ISO text."""
STREAM_COLUMNS = READ_COLUMNS.replace(" event_id, aggregate_id,", " event_id, NULL,")
"""`READ_COLUMNS` for a stream read, which knows its aggregate id."""
assert STREAM_COLUMNS != READ_COLUMNS
LOAD_COLUMNS = STREAM_COLUMNS.replace(f" {_EPOCH.format('recorded_at')},", " NULL,")
"""`STREAM_COLUMNS` for a load (`stream_events`), which never reads when events were
recorded: the server computes and sends one column less per row."""
assert LOAD_COLUMNS != STREAM_COLUMNS
FIRST_STREAM_PAGE = 10_001
"""Versions the first page of a forward stream read covers: a stream of up to 10,000 events
comes back short of it, so in one round trip."""


def stored_event(codec: EventCodec, row: Any, aggregate_id: UUID | None = None) -> StoredEvent:
    """The stored event of a row of `READ_COLUMNS` (decoded when its `event` is read); its
    position and recorded_at are built when first read."""
    return StoredEvent.from_row(
        codec,
        row[0:2],
        row[5],
        row[7],
        row[2],
        row[3],
        row[8] if aggregate_id is None else aggregate_id,
        row[9],
        row[6],
        row[4],
        _envelope(row),
    )


def _exact(text: str) -> datetime:
    """The UTC datetime of `_EXACT`'s text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _envelope(row: Any) -> Any:
    """The lean row's envelope columns (occurred_at, tenant, correlation, causation,
    metadata: a `LeanEnvelope` as a plain tuple), the correlation id and an exact
    occurred_at put back; None for an older, complete row."""
    if row[15]:
        return None
    occurred_at = row[10]
    correlation_id = row[12]
    return (
        _exact(row[16]) if occurred_at is None else occurred_at,
        row[11],
        row[7] if correlation_id is None else correlation_id,
        row[13],
        row[14],
    )


def stream_events(
    codec: EventCodec, rows: Sequence[Any], aggregate_id: UUID
) -> Iterator[DomainEvent]:
    """The decoded events of a page of rows of `LOAD_COLUMNS`, built straight from them as the
    caller consumes them (a load wants the events only: no `StoredEvent`, no position; and
    each event can die once applied, where a list of a whole page of events would make the
    garbage collector scan it over and over). Raises what `StoredEvent.event` raises for a
    row that cannot be decoded."""
    decode, decode_lean = codec.decode, codec.decode_lean
    for row in rows:
        if row[15]:
            yield decode(row[2], row[3], row[4], (row[0], row[1]))
        else:
            event_id = row[7]
            occurred_at = row[10]
            correlation_id = row[12]
            envelope: Any = (  # a LeanEnvelope, as a plain tuple
                _exact(row[16]) if occurred_at is None else occurred_at,
                row[11],
                event_id if correlation_id is None else correlation_id,
                row[13],
                row[14],
            )
            yield decode_lean(
                row[2],
                row[3],
                row[4],
                event_id,
                aggregate_id,
                row[9],
                row[6],
                envelope,
                (row[0], row[1]),
            )


def record_of(codec: EventCodec, row: Any) -> EventRecord:
    """A row of `READ_COLUMNS` as `replayed_result` compares it: with its complete JSON."""
    stored = stored_event(codec, row)
    occurred_at = _exact(row[16]) if row[10] is None else utc_from_epoch(row[10])
    return EventRecord.of(stored, row[11], occurred_at)
