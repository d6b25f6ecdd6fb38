"""`SQLiteEventStore`: the store contract on an embedded SQLite file (aiosqlite, WAL).

SQLite lets one writer in at a time (`BEGIN IMMEDIATE`, across processes too), so positions
are handed out in commit order and the global feed is gap-free by construction. Appends run in
one transaction on a dedicated writer connection; reads page through a second connection by
keyset (`position > ?` / `version > ?`), so they never block the writer (WAL) and hold at most
`batch_size` rows in memory.
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
from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import open_connection, store_error, synchronous_mode
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventNotFoundError, OptimisticLockError
from eventsource.stores._append import (
    EventRecord,
    attach_events,
    check_expected_version,
    record_event,
    replayed_result,
    validate_expected_version,
)
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    AppendSignals,
    EventStore,
    Position,
    ReadOptions,
    StoredEvent,
)

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteEventStore"]

_COLUMNS = (
    "position, event_id, event_type, event_version, aggregate_id, aggregate_type, "
    "aggregate_version, tenant_id, occurred_at, recorded_at, payload"
)
_INSERT_COLUMNS = _COLUMNS.removeprefix("position, ")
_ROWS_PER_INSERT = 500  # 10 parameters a row, well below SQLite's variable limit


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


def _timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so SQL comparisons of the column order correctly."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _record(row: sqlite3.Row | tuple[Any, ...]) -> EventRecord:
    return EventRecord(
        position=Position(0, row[0]),
        event_id=UUID(row[1]),
        event_type=row[2],
        event_version=row[3],
        aggregate_id=UUID(row[4]),
        aggregate_type=row[5],
        aggregate_version=row[6],
        tenant_id=UUID(row[7]) if row[7] is not None else None,
        occurred_at=datetime.fromisoformat(row[8]),
        recorded_at=datetime.fromisoformat(row[9]),
        payload=row[10],
    )


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
        self._write_lock = asyncio.Lock()
        self._signals = AppendSignals()
        t = quote_identifier(table)
        self._ddl = [
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
            " UNIQUE (aggregate_id, aggregate_version))",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_type_pos')} "
            f"ON {t} (aggregate_type, position)",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_event_type_pos')} "
            f"ON {t} (event_type, position)",
        ]
        self.outbox = outbox
        self._outbox_insert = ""
        if outbox:
            self._ddl += outbox_ddl(outbox_table)
            self._outbox_insert = (
                f"INSERT INTO {quote_identifier(outbox_table)} (event_id, event_type,"
                " event_version, aggregate_id, aggregate_type, aggregate_version, payload,"
                " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
        self._select = f"SELECT {_COLUMNS} FROM {t}"
        self._count_from = f"SELECT 1 FROM {t}"
        self._insert_row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self._insert = f"INSERT INTO {t} ({_INSERT_COLUMNS}) VALUES "
        self._version_sql = (
            f"SELECT COALESCE(MAX(aggregate_version), 0) FROM {t} WHERE aggregate_id = ?"
        )
        self._exists_sql = f"SELECT 1 FROM {t} WHERE event_id = ?"
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
        writer, _ = await self._connections()
        async with self._write_lock:
            try:
                await writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise store_error(f"SQLite store {self.path!r}: cannot append: {exc}", exc) from exc
            try:
                result = await self._append_in_transaction(
                    writer, aggregate_id, aggregate_type, events, expected_version
                )
                await writer.execute("COMMIT")
            except BaseException as exc:
                await writer.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise store_error(
                        f"SQLite store {self.path!r}: append to {aggregate_id} failed: {exc}", exc
                    ) from exc
                raise
        if result.positions and not result.already_stored:
            self._signals.signal_append()
        return result

    async def _append_in_transaction(
        self,
        conn: aiosqlite.Connection,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        # The happy path costs four statements (BEGIN, version, INSERT, COMMIT); the event ids
        # are looked up only when a check fails, to tell an idempotent retry from a conflict.
        async with conn.execute(self._version_sql, (str(aggregate_id),)) as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        try:
            check_expected_version(aggregate_id, expected_version, current)
        except OptimisticLockError:
            if replay := await self._replay(conn, aggregate_id, aggregate_type, events):
                return replay
            raise
        attached = attach_events(events, aggregate_id, aggregate_type, current + 1)
        recorded_at = _timestamp(utc_now())
        rows = [
            (
                str(event.event_id),
                event.event_type,
                event.event_version,
                str(aggregate_id),
                aggregate_type,
                event.aggregate_version,
                str(event.tenant_id) if event.tenant_id is not None else None,
                _timestamp(event.occurred_at),
                recorded_at,
                self._codec.encode(event),
            )
            for event in attached
        ]
        positions: list[Position] = []
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            sql = self._insert + ", ".join([self._insert_row] * len(chunk)) + " RETURNING position"
            params = [value for row in chunk for value in row]
            try:
                async with conn.execute(sql, params) as cursor:
                    returned = await cursor.fetchall()
            except sqlite3.IntegrityError:
                if replay := await self._replay(conn, aggregate_id, aggregate_type, events):
                    return replay
                raise
            positions.extend(Position(0, int(r[0])) for r in returned)
        positions.sort()
        if self._outbox_insert:
            await conn.executemany(
                self._outbox_insert,
                [(*row[:6], row[9], recorded_at, recorded_at) for row in rows],
            )
        return AppendResult(
            aggregate_id=aggregate_id,
            new_version=current + len(attached),
            events=tuple(attached),
            positions=tuple(positions),
        )

    async def _replay(
        self,
        conn: aiosqlite.Connection,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
    ) -> AppendResult | None:
        """The original result if these events are stored already (or a conflict error)."""
        known = await self._records_by_id(conn, [event.event_id for event in events])
        return replayed_result(events, aggregate_id, aggregate_type, known) if known else None

    async def _records_by_id(
        self, conn: aiosqlite.Connection, event_ids: Iterable[UUID]
    ) -> list[EventRecord]:
        ids = [str(event_id) for event_id in event_ids]
        found: list[EventRecord] = []
        for start in range(0, len(ids), _ROWS_PER_INSERT):
            chunk = ids[start : start + _ROWS_PER_INSERT]
            sql = f"{self._select} WHERE event_id IN ({', '.join('?' * len(chunk))})"
            async with conn.execute(sql, chunk) as cursor:
                found.extend(_record(row) for row in await cursor.fetchall())
        return found

    # -- reads -------------------------------------------------------------------------------

    def _decode(self, record: EventRecord) -> StoredEvent:
        return record_event(self._codec, record)

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
            params.append(_timestamp(options.from_timestamp))
        if options.to_timestamp is not None:
            clauses.append("occurred_at <= ?")
            params.append(_timestamp(options.to_timestamp))
        return clauses, params

    async def _pages(
        self,
        key: str,
        start: int,
        stop: int | None,
        base_clauses: list[str],
        base_params: list[Any],
        options: ReadOptions,
    ) -> AsyncIterator[StoredEvent]:
        """Keyset pagination over `key` (position or version), exclusive of `start`."""
        _, reader = await self._connections()
        filters, filter_params = self._filters(options)
        forward = options.forward
        op, order = (">", "ASC") if forward else ("<", "DESC")
        clauses = [*base_clauses, *filters, f"{key} {op} ?"]
        if stop is not None:
            clauses.append(f"{key} {'<=' if forward else '>='} ?")
        sql = f"{self._select} WHERE {' AND '.join(clauses)} ORDER BY {key} {order} LIMIT ?"
        column = 0 if key == "position" else 6
        remaining = options.limit
        cursor_value = start
        while remaining is None or remaining > 0:
            page = options.batch_size if remaining is None else min(remaining, options.batch_size)
            params = [*base_params, *filter_params, cursor_value]
            if stop is not None:
                params.append(stop)
            params.append(page)
            try:
                async with reader.execute(sql, params) as cursor:
                    rows = list(await cursor.fetchall())
            except sqlite3.Error as exc:
                raise store_error(f"SQLite store {self.path!r}: read failed: {exc}", exc) from exc
            for row in rows:
                yield self._decode(_record(row))
            if len(rows) < page:
                return
            cursor_value = rows[-1][column]
            if remaining is not None:
                remaining -= len(rows)

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        low = max(options.from_version, 1) - 1
        high = options.to_version
        if options.forward:
            start, stop = low, high
        else:
            start, stop = (high + 1 if high is not None else 2**62), low + 1
        async for stored in self._pages(
            "aggregate_version", start, stop, ["aggregate_id = ?"], [str(aggregate_id)], options
        ):
            yield stored

    @staticmethod
    def _feed_start(options: ReadOptions) -> int:
        """The exclusive start of a `read_all` in position numbers."""
        if options.after is not None:
            return options.after.sequence
        return 0 if options.forward else 2**62

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        async for stored in self._pages(
            "position", self._feed_start(options), None, [], [], options
        ):
            yield stored

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
            async with reader.execute(f"SELECT count(*) FROM ({sql})", params) as cursor:
                row = await cursor.fetchone()
        except sqlite3.Error as exc:
            raise store_error(f"SQLite store {self.path!r}: count failed: {exc}", exc) from exc
        return int(row[0]) if row else 0

    async def current_position(self) -> Position:
        _, reader = await self._connections()
        async with reader.execute(self._current_sql) as cursor:
            row = await cursor.fetchone()
        return Position(0, int(row[0])) if row and row[0] is not None else Position.START

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        _, reader = await self._connections()
        async with reader.execute(self._version_sql, (str(aggregate_id),)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def event_exists(self, event_id: UUID) -> bool:
        _, reader = await self._connections()
        async with reader.execute(self._exists_sql, (str(event_id),)) as cursor:
            return await cursor.fetchone() is not None

    async def get_event(self, event_id: UUID) -> StoredEvent:
        _, reader = await self._connections()
        records = await self._records_by_id(reader, [event_id])
        if not records:
            raise EventNotFoundError(event_id)
        return self._decode(records[0])
