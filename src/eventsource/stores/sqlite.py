"""`SQLiteEventStore`: the store contract on an embedded SQLite file (aiosqlite, WAL).

SQLite lets one writer in at a time (`BEGIN IMMEDIATE`, across processes too), so positions
are handed out in commit order and the global feed is gap-free by construction. Appends run in
one transaction on a dedicated writer connection; reads page through a second connection by
keyset (`position > ?` / `version > ?`), so they never block the writer (WAL) and hold at most
`batch_size` rows in memory.

Every operation is one hop to the connection's aiosqlite thread: an append runs its whole
transaction there (`_sqlite_append`), a read page runs its query, fetches its rows and builds
their stored events there (aiosqlite's own methods hop once per statement and per fetch, and
those hops were half of what a small operation cost). Rows are lean (`_sqlite_rows`): the
payload holds the event's own fields, the envelope has columns; older rows read as before.
Writers of one file in this process queue on an in-process lock (`FileLock`); the one in front
waits for the file's write lock with short pauses of its own instead of SQLite's busy handler
(`begin_immediate`), so writers in several processes get their fair share.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal.clock import utc_now
from eventsource._internal.closing import closing_iterator
from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import (
    file_lock,
    open_connection,
    run_on,
    store_error,
    synchronous_mode,
)
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventNotFoundError
from eventsource.stores._append import attach_events, replayed_result, validate_expected_version
from eventsource.stores._sqlite_append import AppendStatements, Replay, append_transaction
from eventsource.stores._sqlite_rows import (
    LOAD_COLUMNS,
    READ_COLUMNS,
    STREAM_COLUMNS,
    event_ddl,
    fetch_row,
    fetch_rows,
    stored_event,
    stored_events,
    stream_events,
    timestamp,
    upgrade,
)
from eventsource.stores._stream_list import StreamListSql
from eventsource.stores.interface import (
    DEFAULT_BATCH_SIZE,
    AppendResult,
    AppendSignal,
    AppendSignals,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
    StreamInfo,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteEventStore", "outbox_ddl"]

FIRST_STREAM_PAGE = 10_001
"""Versions the first page of a forward stream read covers, as on PostgreSQL."""


def outbox_ddl(table: str) -> list[str]:
    """The outbox table of an SQLite file: written by `SQLiteEventStore(outbox=True)`, read by
    `SQLiteOutboxRepository` (relays claim rows with a lease: `claimed_until`)."""
    t = quote_identifier(table)
    return [
        f"CREATE TABLE IF NOT EXISTS {t} ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " event_id TEXT NOT NULL,"
        " event_type TEXT NOT NULL,"
        " event_version INTEGER NOT NULL,"
        " aggregate_id TEXT NOT NULL,"
        " aggregate_type TEXT NOT NULL,"
        " aggregate_version INTEGER NOT NULL,"
        " payload TEXT NOT NULL,"
        " created_at TEXT NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt_at TEXT NOT NULL,"
        " last_error TEXT,"
        " published_at TEXT,"
        " claimed_until TEXT,"
        " claim_token TEXT)",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_pending_idx')}"
        f" ON {t} (aggregate_id, id) WHERE published_at IS NULL",
        f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_published_idx')}"
        f" ON {t} (published_at) WHERE published_at IS NOT NULL",
    ]


_PARTITION_FUNCTION = "eventsource_partition"


def _partition_of(aggregate_id: object, partitions: int) -> int:
    """`ReadOptions.partition`'s `aggregate_id.int % n` for SQL (`eventsource_partition`).

    SQLite has no 128-bit integers and no hex parsing, and the digit-by-digit modulo in SQL
    costs five times this call; a row whose id is not a UUID goes to partition 0, so every
    row is in exactly one partition (and the function never fails a query)."""
    try:
        return UUID(str(aggregate_id)).int % partitions
    except ValueError:
        return 0


class SQLiteEventStore(EventStore):
    """An event store in one SQLite file; the embedded default for apps, demos and tests.

    Connects and creates its table on first use (or on `await store.connect()`). With
    `outbox=True` each append also queues its events in `outbox_table`, in the same
    transaction (see `SQLiteOutboxRepository` and `OutboxRelay`).
    `path=":memory:"` keeps everything in one private in-memory database.
    """

    backend = "sqlite"
    filters_partitions = True

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        registry: EventRegistry | None = None,
        table: str = "events",
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
        outbox: bool = False,
        outbox_table: str = "outbox",
    ) -> None:
        require("aiosqlite", extra="sqlite", feature="SQLiteEventStore")
        synchronous = synchronous_mode(synchronous)
        self.path = str(path)
        self._codec = EventCodec(registry)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._file_lock = file_lock(self.path)
        self._signals = AppendSignals()
        t = quote_identifier(table)
        self.table = table
        self._ddl = event_ddl(table)
        self.outbox = outbox
        self._outbox_insert = ""
        if outbox:
            self._ddl += outbox_ddl(outbox_table)
            self._outbox_insert = (
                f"INSERT INTO {quote_identifier(outbox_table)} (event_id, event_type,"
                " event_version, aggregate_id, aggregate_type, aggregate_version, payload,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
        self._statements = AppendStatements.of(t, self._outbox_insert)
        self._select = f"SELECT {READ_COLUMNS} FROM {t}"
        self._stream_select = f"SELECT {STREAM_COLUMNS} FROM {t}"
        self._load_select = f"SELECT {LOAD_COLUMNS} FROM {t}"
        self._count_from = f"SELECT 1 FROM {t}"
        self._version_sql = self._statements.version
        self._exists_sql = f"SELECT 1 FROM {t} WHERE event_id = ?"
        self._streams_sql = StreamListSql(t, lambda n, kind: f"?{n}")
        self._current_sql = f"SELECT MAX(position) FROM {t}"

    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        """Signals for this store object's appends (other processes' appends: poll)."""
        return self._signals.listen()

    # -- connections -------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connections and create the table if needed (idempotent)."""
        await self._connections()

    async def _connections(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        writer, reader = self._writer, self._reader
        if writer is not None and reader is not None:
            return writer, reader
        async with self._connect_lock:
            if self._writer is None or self._reader is None:
                self._writer, self._reader = await self._open()
            return self._writer, self._reader

    async def _open(self) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        writer = await self._open_one(self._ddl)
        try:
            # Lean columns for a table an older release created; then the writer waits for
            # the write lock with pauses of its own (`begin_immediate`), not SQLite's.
            await run_on(writer, upgrade, self.table)
            await writer.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            await writer.close()
            raise store_error(f"SQLite store {self.path!r}: cannot open: {exc}", exc) from exc
        except BaseException:
            await writer.close()
            raise
        if self.path == ":memory:":
            return writer, writer
        try:
            reader = await self._open_one(())
        except BaseException:
            await writer.close()
            raise
        return writer, reader

    async def _open_one(self, ddl: Sequence[str]) -> aiosqlite.Connection:
        connection = await open_connection(
            self.path,
            busy_timeout=self._busy_timeout,
            synchronous=self._synchronous,
            ddl=ddl,
            owner=f"SQLiteEventStore({self.path!r})",
        )
        try:
            await connection.create_function(
                _PARTITION_FUNCTION, 2, _partition_of, deterministic=True
            )
        except BaseException:
            await connection.close()
            raise
        return connection

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    # -- append ------------------------------------------------------------------------------

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        validate_expected_version(expected_version)
        # Checked and stamped before the transaction, with the versions an exact expectation
        # gives (stamped again after it in the rare case the stream was elsewhere).
        first = expected_version + 1 if expected_version >= 0 else 1
        attached = attach_events(events, aggregate_id, aggregate_type, first)
        rows = self._rows(attached, aggregate_id, aggregate_type)
        writer, _ = await self._connections()
        # No lock here: the writer's thread runs queued appends one after the other, so a
        # second task's append is queued at once instead of after the first one's return.
        try:
            outcome = await run_on(
                writer,
                append_transaction,
                self._statements,
                self._codec,
                aggregate_id,
                attached,
                rows,
                expected_version,
                self._busy_timeout,
                self._file_lock,
            )
        except sqlite3.Error as exc:
            raise store_error(
                f"SQLite store {self.path!r}: append to {aggregate_id} failed: {exc}", exc
            ) from exc
        if isinstance(outcome, Replay):
            return replayed_result(events, aggregate_id, aggregate_type, outcome.records)
        if outcome.current + 1 != first:
            attached = attach_events(attached, aggregate_id, aggregate_type, outcome.current + 1)
        if outcome.positions:
            self._signals.signal_append()
        return AppendResult(
            aggregate_id=aggregate_id,
            new_version=outcome.current + len(attached),
            events=tuple(attached),
            positions=tuple(Position(0, p) for p in outcome.positions),
        )

    def _rows(
        self, events: list[DomainEvent], aggregate_id: UUID, aggregate_type: str
    ) -> list[list[Any]]:
        """The INSERT values of the events, lean; the version slot is filled in the
        transaction."""
        encode = self._codec.encode_lean
        stream = str(aggregate_id)
        recorded_at = timestamp(utc_now())
        rows: list[list[Any]] = []
        append = rows.append
        for event in events:
            payload, metadata = encode(event)
            own_id = event.event_id
            event_id = str(own_id)
            correlation = event.correlation_id
            tenant, causation, occurred = event.tenant_id, event.causation_id, event.occurred_at
            append(
                [
                    event_id,
                    event.event_type,
                    event.event_version,
                    stream,
                    aggregate_type,
                    0,
                    None if tenant is None else str(tenant),
                    occurred.isoformat(timespec="microseconds")
                    if occurred.tzinfo is UTC
                    else timestamp(occurred),
                    recorded_at,
                    payload,
                    event_id if correlation.int == own_id.int else str(correlation),
                    None if causation is None else str(causation),
                    metadata,
                ]
            )
        return rows

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _filters(options: ReadOptions) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if options.event_types is not None:
            types = sorted(options.event_types)
            clauses.append(f"event_type IN ({', '.join('?' * len(types))})" if types else "0")
            params.extend(types)
        if options.aggregate_type is not None:
            clauses.append("aggregate_type = ?")
            params.append(options.aggregate_type)
        if options.tenant_id is not None:
            clauses.append("tenant_id = ?")
            params.append(str(options.tenant_id))
        if options.partition is not None:
            clauses.append(f"{_PARTITION_FUNCTION}(aggregate_id, ?) = ?")
            params.extend((options.partition[1], options.partition[0]))
        if options.from_timestamp is not None:
            clauses.append("occurred_at >= ?")
            params.append(timestamp(options.from_timestamp))
        if options.to_timestamp is not None:
            clauses.append("occurred_at <= ?")
            params.append(timestamp(options.to_timestamp))
        return clauses, params

    async def _pages(
        self,
        key: str,
        start: int,
        stop: int | None,
        aggregate_id: UUID | None,
        options: ReadOptions,
        load: bool = False,
    ) -> AsyncIterator[list[Any]]:
        """Pages of rows (cut to `options.limit`) by keyset pagination over `key` (position
        or version), exclusive of `start`: one thread hop per page. A forward stream read's
        first page holds a typical stream whole (`FIRST_STREAM_PAGE`), so a load is one hop.
        The rows are turned into stored events or events on the event loop's thread, by
        the reader that wants them; `load`: rows for `stream_events` (no recorded_at)."""
        _, reader = await self._connections()
        filters, filter_params = self._filters(options)
        forward = options.forward
        op, order = (">", "ASC") if forward else ("<", "DESC")
        base: list[Any] = []
        clauses = [*filters, f"{key} {op} ?"]
        select = self._select
        if aggregate_id is not None:
            clauses.insert(0, "aggregate_id = ?")
            base.append(str(aggregate_id))
            select = self._load_select if load else self._stream_select
        if stop is not None:
            clauses.append(f"{key} {'<=' if forward else '>='} ?")
        sql = f"{select} WHERE {' AND '.join(clauses)} ORDER BY {key} {order} LIMIT ?"
        # the column `key` names in READ_COLUMNS: where the next page starts
        key_column = 0 if key == "position" else 4
        remaining = options.limit
        cursor_value = start
        step = options.batch_size
        # A stream has one aggregate type: filtering on it keeps the stream whole or empty.
        thinned = len(filters) > (options.aggregate_type is not None)
        first_page = (
            aggregate_id is not None and forward and step >= DEFAULT_BATCH_SIZE and not thinned
        )
        page_size = max(step, FIRST_STREAM_PAGE) if first_page else step
        while remaining is None or remaining > 0:
            page = page_size if remaining is None else min(remaining, page_size)
            page_size = step
            params = [*base, *filter_params, cursor_value]
            if stop is not None:
                params.append(stop)
            params.append(page)
            try:
                rows = await run_on(reader, fetch_rows, sql, params)
            except sqlite3.Error as exc:
                raise store_error(f"SQLite store {self.path!r}: read failed: {exc}", exc) from exc
            if rows:
                yield rows
            if len(rows) < page:
                return
            cursor_value = rows[-1][key_column]
            if remaining is not None:
                remaining -= len(rows)

    async def _stored_pages(
        self,
        key: str,
        start: int,
        stop: int | None,
        aggregate_id: UUID | None,
        options: ReadOptions,
    ) -> AsyncIterator[StoredEvent]:
        codec = self._codec
        async for rows in self._pages(key, start, stop, aggregate_id, options):
            for stored in stored_events(codec, rows, aggregate_id):
                yield stored

    @staticmethod
    def _stream_range(options: ReadOptions) -> tuple[int, int | None]:
        """The exclusive start and inclusive stop of a stream read, in versions."""
        low = max(options.from_version, 1) - 1
        high = options.to_version
        if options.forward:
            return low, high
        return (high + 1 if high is not None else 2**62), low + 1

    def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        start, stop = self._stream_range(options)
        return self._stored_pages("aggregate_version", start, stop, aggregate_id, options)

    async def read_stream_events(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[Iterable[DomainEvent]]:
        """A load's read: each page's events built straight from its rows as it is
        iterated."""
        options = options or ReadOptions()
        start, stop = self._stream_range(options)
        codec = self._codec
        pages = self._pages("aggregate_version", start, stop, aggregate_id, options, load=True)
        async with closing_iterator(pages) as rows_pages:
            async for rows in rows_pages:
                yield stream_events(codec, rows, aggregate_id)

    @staticmethod
    def _feed_start(options: ReadOptions) -> int:
        """The exclusive start of a `read_all` in position numbers."""
        if options.after is not None:
            return options.after.sequence
        return 0 if options.forward else 2**62

    def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        return self._stored_pages("position", self._feed_start(options), None, None, options)

    async def count_events(self, options: ReadOptions | None = None) -> int:
        """One `count(*)` over the rows `read_all` would page through (an index range)."""
        options = options or ReadOptions()
        _, reader = await self._connections()
        clauses, params = self._filters(options)
        clauses.append("position > ?" if options.forward else "position < ?")
        params.append(self._feed_start(options))
        sql = f"{self._count_from} WHERE {' AND '.join(clauses)}"
        if options.limit is not None:
            sql += " LIMIT ?"
            params.append(options.limit)
        try:
            row = await run_on(reader, fetch_row, f"SELECT count(*) FROM ({sql})", params)
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path!r}: count failed: {exc}", exc) from exc
        return int(row[0]) if row else 0

    async def current_position(self) -> Position:
        _, reader = await self._connections()
        row = await run_on(reader, fetch_row, self._current_sql, ())
        return Position(0, int(row[0])) if row and row[0] is not None else Position.START

    async def list_streams(
        self, *, aggregate_type: str | None = None, after: UUID | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """`StreamListing.list_streams`: a loose index scan over the stream/version index
        (`_stream_list`); ids are canonical text, which sorts as the UUIDs do."""
        sql, args = self._streams_sql.statement(
            aggregate_type, None if after is None else str(after), limit
        )
        _, reader = await self._connections()
        try:
            rows = await run_on(reader, fetch_rows, sql, args)
        except sqlite3.Error as exc:
            raise store_error(
                f"SQLite store {self.path!r}: list streams failed: {exc}", exc
            ) from exc
        return [
            StreamInfo(UUID(row[0]), row[1], int(row[2]), datetime.fromisoformat(row[3]))
            for row in rows
        ]

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        _, reader = await self._connections()
        row = await run_on(reader, fetch_row, self._version_sql, (str(aggregate_id),))
        return int(row[0]) if row else 0

    async def event_exists(self, event_id: UUID) -> bool:
        _, reader = await self._connections()
        return await run_on(reader, fetch_row, self._exists_sql, (str(event_id),)) is not None

    async def get_event(self, event_id: UUID) -> StoredEvent:
        _, reader = await self._connections()
        sql = f"{self._select} WHERE event_id = ?"
        try:
            rows = await run_on(reader, fetch_rows, sql, [str(event_id)])
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path!r}: read failed: {exc}", exc) from exc
        if not rows:
            raise EventNotFoundError(event_id)
        return stored_event(self._codec, rows[0], None)
