"""The SQLite store's append transaction, run whole on the writer connection's thread.

aiosqlite hops to its worker thread and back for every statement and every fetch; an append
was five hops (BEGIN, version read, INSERT, fetch, COMMIT), and waiting on them was half of
what a batch append cost. Here the transaction is one function the store runs on that thread
(`eventsource._internal.sqlite.run_on`): one hop per append.

The events are encoded before the transaction (in the lean form their payload does not
depend on the version they get), so the write lock is held for the statements only. The lock
is taken in two steps: writers of this process queue on the file's `FileLock` (a waiter blocks
without polling and goes the moment the lock is free), and the one at the front takes SQLite's
lock with `begin_immediate`, which retries with short pauses of its own rather than SQLite's
busy handler, so that writers in several processes share the file fairly.

The rows' positions come from the INSERT's last rowid: AUTOINCREMENT numbers a multi-row
INSERT's rows consecutively, so `RETURNING` (which buffers every row) is not needed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsource._internal.sqlite import FileLock, begin_immediate
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec, LeanEnvelope
from eventsource.exceptions import OptimisticLockError
from eventsource.stores._append import EventRecord, check_expected_version
from eventsource.stores._sqlite_rows import INSERT_COLUMNS, READ_COLUMNS, record_of

__all__ = ["AppendStatements", "Appended", "Replay", "append_transaction", "records_by_id"]

ROWS_PER_INSERT = 500  # 13 parameters a row, well below SQLite's variable limit (32,766)
_VERSION_AT = 5  # where a row's aggregate_version goes among INSERT_COLUMNS


@dataclass(frozen=True, slots=True)
class AppendStatements:
    """The statements of an append on one table, built once by the store."""

    version: str
    insert_head: str
    select: str
    outbox_insert: str
    """Empty without an outbox."""

    @classmethod
    def of(cls, quoted_table: str, outbox_insert: str) -> AppendStatements:
        return cls(
            version=(
                "SELECT COALESCE(MAX(aggregate_version), 0) FROM"
                f" {quoted_table} WHERE aggregate_id = ?"
            ),
            insert_head=f"INSERT INTO {quoted_table} ({INSERT_COLUMNS}) VALUES ",
            select=f"SELECT {READ_COLUMNS} FROM {quoted_table}",
            outbox_insert=outbox_insert,
        )


@dataclass(frozen=True, slots=True)
class Appended:
    """A committed append: the stream's version before it and the rows' positions."""

    current: int
    positions: list[int]


@dataclass(frozen=True, slots=True)
class Replay:
    """Nothing written: some event ids of the batch are stored already (these records)."""

    records: list[EventRecord]


_ROW = "(" + ", ".join("?" * len(INSERT_COLUMNS.split(","))) + ")"
_INSERTS: dict[int, str] = {}


def _values(head: str, rows: int) -> str:
    """`head` with `rows` value tuples (the tail is cached per row count)."""
    tail = _INSERTS.get(rows)
    if tail is None:
        tail = _INSERTS[rows] = ", ".join([_ROW] * rows)
    return head + tail


def append_transaction(
    conn: sqlite3.Connection,
    statements: AppendStatements,
    codec: EventCodec,
    aggregate_id: UUID,
    events: Sequence[DomainEvent],
    rows: Sequence[list[Any]],
    expected_version: int,
    busy_timeout: float,
    lock: FileLock | None,
) -> Appended | Replay:
    """Append `rows` (INSERT_COLUMNS values, the version slot filled in here) in one write
    transaction, queued behind this process's other writers of the file on `lock`. Raises
    `OptimisticLockError` when the version check fails and no event of the batch is stored;
    sqlite3 errors pass through (the store maps them)."""
    deadline = time.monotonic() + busy_timeout
    if lock is not None:
        lock.acquire(busy_timeout)
    try:
        begin_immediate(conn, deadline - time.monotonic())
        try:
            outcome = _append(conn, statements, codec, aggregate_id, events, rows, expected_version)
            conn.execute("ROLLBACK" if isinstance(outcome, Replay) else "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        if lock is not None:
            lock.release()
    return outcome


def _append(
    conn: sqlite3.Connection,
    statements: AppendStatements,
    codec: EventCodec,
    aggregate_id: UUID,
    events: Sequence[DomainEvent],
    rows: Sequence[list[Any]],
    expected_version: int,
) -> Appended | Replay:
    """The statements of `append_transaction`, inside its transaction."""
    current = conn.execute(statements.version, (str(aggregate_id),)).fetchone()[0]
    try:
        check_expected_version(aggregate_id, expected_version, current)
    except OptimisticLockError:
        if known := records_by_id(conn, statements.select, codec, events):
            return Replay(known)
        raise
    version = current
    for row in rows:
        version += 1
        row[_VERSION_AT] = version
    positions: list[int] = []
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start : start + ROWS_PER_INSERT]
        params = [value for row in chunk for value in row]
        try:
            cursor = conn.execute(_values(statements.insert_head, len(chunk)), params)
        except sqlite3.IntegrityError:
            # The rows of the earlier chunks are this transaction's own (rolled back with
            # it), not an earlier append: only rows before them count as stored.
            before = positions[0] if positions else None
            if known := records_by_id(conn, statements.select, codec, events, before):
                return Replay(known)
            raise
        # AUTOINCREMENT gives each row one more than the largest position ever used, and a
        # multi-row INSERT adds its rows in order under the write lock: they are consecutive,
        # ending at the last one inserted (cheaper than RETURNING, which buffers every row).
        last = cursor.lastrowid
        if last is None or cursor.rowcount != len(chunk):
            raise sqlite3.DatabaseError(f"INSERT of {len(chunk)} rows reported {cursor.rowcount}")
        positions.extend(range(last - len(chunk) + 1, last + 1))
    if statements.outbox_insert:
        conn.executemany(statements.outbox_insert, _outbox_rows(rows))
    return Appended(current, positions)


def _outbox_rows(rows: Sequence[list[Any]]) -> list[tuple[Any, ...]]:
    """The outbox rows of the appended rows: with the complete JSON of each event."""
    queued = []
    for row in rows:
        event_id, event_type, event_version, aggregate_id, aggregate_type, version = row[:6]
        tenant_id, occurred_at, recorded_at, payload, correlation_id, causation_id = row[6:12]
        complete = EventCodec.compose(
            payload,
            event_type,
            event_version,
            UUID(event_id),
            UUID(aggregate_id),
            aggregate_type,
            version,
            LeanEnvelope(
                datetime.fromisoformat(occurred_at),
                None if tenant_id is None else UUID(tenant_id),
                UUID(correlation_id),
                None if causation_id is None else UUID(causation_id),
                row[12],
            ),
        )
        queued.append(
            (
                event_id,
                event_type,
                event_version,
                aggregate_id,
                aggregate_type,
                version,
                complete,
                recorded_at,
                recorded_at,
            )
        )
    return queued


def records_by_id(
    conn: sqlite3.Connection,
    select: str,
    codec: EventCodec,
    events: Sequence[DomainEvent],
    before: int | None = None,
) -> list[EventRecord]:
    """The stored records of these events' ids (those found), only those at positions below
    `before` when it is given."""
    ids = [str(event.event_id) for event in events]
    found: list[EventRecord] = []
    for start in range(0, len(ids), ROWS_PER_INSERT):
        chunk = ids[start : start + ROWS_PER_INSERT]
        sql = f"{select} WHERE event_id IN ({', '.join('?' * len(chunk))})"
        found.extend(
            record_of(codec, row)
            for row in conn.execute(sql, chunk).fetchall()
            if before is None or row[0] < before
        )
    return found
