"""`SQLiteOutboxRepository` and `SQLiteInboxRepository`: outbox and inbox tables in an SQLite
file (usually the events' file).

SQLite has one writer at a time, so a relay cannot hold a transaction open while it publishes
without stopping every append. A claim is a lease instead: one short transaction stamps the
rows with a token and `claimed_until`; the relay publishes outside any transaction; a second
short transaction marks them, only where the token is still its own. A relay that dies
leaves the lease to expire (`lease_seconds`), and the rows are claimed again. A row is not
claimable while an earlier unpublished row of its aggregate is leased, delayed or parked,
which keeps each aggregate's events in order across relays.

Files made before rows could be parked get the `parked_at` column when a repository first
opens them (checked and added in one `BEGIN IMMEDIATE` transaction, so processes opening the
file together add it once); the store's appends never name that column.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from eventsource._internal.clock import utc_now
from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import OwnConnection, transaction
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.outbox.interface import (
    InboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRepository,
    OutboxStats,
    RecordedBatch,
)
from eventsource.stores.sqlite import outbox_ddl

__all__ = ["SQLiteInboxRepository", "SQLiteOutboxRepository"]


_ENTRY_COLUMNS = (
    "id, event_id, event_type, event_version, aggregate_id, aggregate_type, aggregate_version,"
    " payload, created_at, attempts, last_error, parked_at"
)


def _text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


class _SQLiteTable:
    """One connection of its own, opened (and the table created) on first use; each
    operation one hop to its thread (`OwnConnection`), so a cancelled call ends its
    transaction anyway."""

    def __init__(
        self,
        path: str | Path,
        table: str,
        ddl: Sequence[str],
        *,
        busy_timeout: float,
        synchronous: str,
        prepare: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        require("aiosqlite", extra="sqlite", feature=type(self).__name__)
        self.path = str(path)
        self.table = quote_identifier(table)
        self._db = OwnConnection(
            self.path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            ddl=ddl,
            what=f"SQLite {self.table} table",
            where=f"SQLite {self.table} in {self.path!r}",
            prepare=prepare,
        )

    async def _transaction(
        self, what: str, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Any]]:
        """Run `statements` in one `BEGIN IMMEDIATE` transaction; the rows of each."""
        return await self._db.run(what, transaction, statements)

    async def close(self) -> None:
        await self._db.close()


def _add_parked_column(conn: sqlite3.Connection, table: str, index_sql: str) -> None:
    """Give a file made before rows could be parked its `parked_at` column (run on the
    connection's thread, in one write transaction: processes opening the file together add
    it once)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {
            row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))
        }
        if "parked_at" not in columns:
            conn.execute(f"ALTER TABLE {quote_identifier(table)} ADD COLUMN parked_at TEXT")
        conn.execute(index_sql)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SQLiteOutboxRepository(_SQLiteTable, OutboxRepository):
    """The outbox table an `SQLiteEventStore(outbox=True)` writes (same file, same table name).

    `lease_seconds` is how long a claimed batch may take to publish before another relay may
    claim its rows again (publishing them twice); keep it well above a publish's worst case.
    """

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        table: str = "outbox",
        lease_seconds: float = 60.0,
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        parked_index_sql = (
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_parked_idx')}"
            f" ON {quote_identifier(table)} (id) WHERE parked_at IS NOT NULL"
        )
        super().__init__(
            path,
            table,
            outbox_ddl(table),
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            prepare=functools.partial(_add_parked_column, table=table, index_sql=parked_index_sql),
        )
        self.lease_seconds = lease_seconds
        t = self.table
        self._add_sql = (
            f"INSERT INTO {t} (event_id, event_type, event_version, aggregate_id,"
            " aggregate_type, aggregate_version, payload, created_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._add_one_sql = self._add_sql + " RETURNING id"
        self._mark_published_sql = (
            f"UPDATE {t} SET published_at = ?, claimed_until = NULL, claim_token = NULL"
            " WHERE id = ? AND published_at IS NULL RETURNING 1"
        )
        self._claim_sql = (
            f"UPDATE {t} SET claimed_until = ?1, claim_token = ?2 WHERE id IN ("
            f"SELECT o.id FROM {t} o WHERE o.published_at IS NULL AND o.parked_at IS NULL"
            " AND o.next_attempt_at <= ?3 AND (o.claimed_until IS NULL OR o.claimed_until < ?3)"
            f" AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.aggregate_id = o.aggregate_id"
            " AND p.published_at IS NULL AND p.id < o.id"
            " AND (p.parked_at IS NOT NULL OR p.next_attempt_at > ?3 OR p.claimed_until >= ?3))"
            " ORDER BY o.id LIMIT ?4)"
        )
        self._claimed_sql = f"SELECT {_ENTRY_COLUMNS} FROM {t} WHERE claim_token = ? ORDER BY id"
        self._release_sql = (
            f"UPDATE {t} SET claimed_until = NULL, claim_token = NULL WHERE claim_token = ?"
        )
        self._published_sql = f"UPDATE {t} SET published_at = ? WHERE id = ? AND claim_token = ?"
        self._failed_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?"
            " WHERE id = ? AND claim_token = ?"
        )
        self._parked_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = ?, parked_at = ?"
            " WHERE id = ? AND claim_token = ?"
        )
        parked = "parked_at IS NOT NULL AND published_at IS NULL"
        self._list_parked_sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM {t} WHERE {parked} ORDER BY id LIMIT ?"
        )
        self._retry_parked_sql = (
            f"UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = ?"
            f" WHERE id = ? AND {parked} RETURNING 1"
        )
        self._discard_parked_sql = f"DELETE FROM {t} WHERE id = ? AND {parked} RETURNING 1"
        unparked = "published_at IS NULL AND parked_at IS NULL"
        leased = "published_at IS NULL AND claimed_until >= ?1"
        self._stats_sql = (
            f"SELECT count(*) FILTER (WHERE {unparked}),"
            f" count(*) FILTER (WHERE {unparked} AND attempts > 0),"
            " count(*) FILTER (WHERE published_at IS NOT NULL),"
            f" min(created_at) FILTER (WHERE {unparked}),"
            f" count(*) FILTER (WHERE {parked}),"
            f" count(*) FILTER (WHERE {leased}),"
            f" count(DISTINCT claim_token) FILTER (WHERE {leased}) FROM {t}"
        )

    async def add(self, events: Sequence[DomainEvent]) -> None:
        now = _text(utc_now())
        await self._transaction(
            "add events",
            [
                (
                    self._add_sql,
                    (
                        str(e.event_id),
                        e.event_type,
                        e.event_version,
                        str(e.aggregate_id),
                        e.aggregate_type,
                        e.aggregate_version,
                        EventCodec.encode(e),
                        now,
                        now,
                    ),
                )
                for e in events
            ],
        )

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        token = uuid4().hex
        now = utc_now()
        until = _text(now + timedelta(seconds=self.lease_seconds))
        _, rows = await self._transaction(
            "claim rows",
            [
                (self._claim_sql, (until, token, _text(now), limit)),
                (self._claimed_sql, (token,)),
            ],
        )
        batch = RecordedBatch([self._entry(row) for row in rows])
        if not batch.entries:
            yield batch
            return
        try:
            yield batch
        except BaseException:
            await self._transaction("release claim", [(self._release_sql, (token,))])
            raise
        published_at = _text(utc_now())
        statements: list[tuple[str, Sequence[Any]]] = [
            (self._published_sql, (published_at, entry_id, token))
            for entry_id in batch.published_ids
        ]
        for ids, error, retry_at in batch.failures:
            statements += [
                (self._failed_sql, (error, _text(retry_at), entry_id, token)) for entry_id in ids
            ]
        for ids, error in batch.parks:
            statements += [
                (self._parked_sql, (error, published_at, entry_id, token)) for entry_id in ids
            ]
        statements.append((self._release_sql, (token,)))
        await self._transaction("mark rows", statements)

    @staticmethod
    def _entry(row: Sequence[Any]) -> OutboxEntry:
        return OutboxEntry(
            id=row[0],
            event_id=UUID(row[1]),
            event_type=row[2],
            event_version=row[3],
            aggregate_id=UUID(row[4]),
            aggregate_type=row[5],
            aggregate_version=row[6],
            payload=row[7],
            created_at=_time(row[8]),
            attempts=row[9],
            last_error=row[10],
            parked_at=_time(row[11]) if row[11] is not None else None,
        )

    async def cleanup(self, older_than: timedelta) -> int:
        cutoff = _text(utc_now() - older_than)
        (rows,) = await self._transaction(
            "clean up",
            [(f"DELETE FROM {self.table} WHERE published_at < ? RETURNING 1", (cutoff,))],
        )
        return len(rows)

    async def stats(self) -> OutboxStats:
        now = _text(utc_now())
        ((row,),) = await self._transaction("stats", [(self._stats_sql, (now,))])
        oldest = _time(row[3]) if row[3] is not None else None
        return OutboxStats(
            pending=row[0],
            failing=row[1],
            published=row[2],
            oldest_pending=oldest,
            parked=row[4],
            leased=row[5],
            relays=row[6],
        )

    async def list_parked(self, limit: int = 100) -> list[OutboxEntry]:
        (rows,) = await self._transaction("list parked rows", [(self._list_parked_sql, (limit,))])
        return [self._entry(row) for row in rows]

    async def add_event(self, event: DomainEvent) -> int:
        now = _text(utc_now())
        row = (
            str(event.event_id),
            event.event_type,
            event.event_version,
            str(event.aggregate_id),
            event.aggregate_type,
            event.aggregate_version,
            EventCodec.encode(event),
            now,
            now,
        )
        ((added,),) = await self._transaction("add an event", [(self._add_one_sql, row)])
        return int(added[0])

    async def mark_published(self, entry_id: int) -> bool:
        (rows,) = await self._transaction(
            "mark a row published", [(self._mark_published_sql, (_text(utc_now()), entry_id))]
        )
        return bool(rows)

    async def retry_parked(self, entry_id: int) -> bool:
        (rows,) = await self._transaction(
            "retry a parked row", [(self._retry_parked_sql, (_text(utc_now()), entry_id))]
        )
        return bool(rows)

    async def discard_parked(self, entry_id: int) -> bool:
        (rows,) = await self._transaction(
            "discard a parked row", [(self._discard_parked_sql, (entry_id,))]
        )
        return bool(rows)


class SQLiteInboxRepository(_SQLiteTable, InboxRepository):
    """The inbox in the table `table` of an SQLite file."""

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        table: str = "inbox",
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
    ) -> None:
        t = quote_identifier(table)
        ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} (consumer TEXT NOT NULL, event_id TEXT NOT NULL,"
            " processed_at TEXT NOT NULL, PRIMARY KEY (consumer, event_id))",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_processed_idx')}"
            f" ON {t} (processed_at)",
        )
        super().__init__(path, table, ddl, busy_timeout=busy_timeout, synchronous=synchronous)

    async def contains(self, consumer: str, event_id: UUID) -> bool:
        (rows,) = await self._transaction(
            "look up",
            [
                (
                    f"SELECT 1 FROM {self.table} WHERE consumer = ? AND event_id = ?",
                    (consumer, str(event_id)),
                )
            ],
        )
        return bool(rows)

    async def record(self, consumer: str, event_id: UUID) -> bool:
        (rows,) = await self._transaction(
            "record",
            [
                (
                    f"INSERT INTO {self.table} (consumer, event_id, processed_at)"
                    " VALUES (?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1",
                    (consumer, str(event_id), _text(utc_now())),
                )
            ],
        )
        return bool(rows)

    async def cleanup(self, older_than: timedelta) -> int:
        (rows,) = await self._transaction(
            "clean up",
            [
                (
                    f"DELETE FROM {self.table} WHERE processed_at < ? RETURNING 1",
                    (_text(utc_now() - older_than),),
                )
            ],
        )
        return len(rows)
