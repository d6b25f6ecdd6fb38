"""`SQLiteCheckpointRepository` and `SQLiteDLQRepository`: subscription state in tables of an
SQLite file (usually the events' file)."""

from __future__ import annotations

import asyncio
import sqlite3
from abc import abstractmethod
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import open_connection, store_error, synchronous_mode
from eventsource.repositories._sql import (
    SQLCheckpointRepository,
    SQLDLQRepository,
    SQLRepository,
    sqlite_param,
)

if TYPE_CHECKING:
    import aiosqlite

    from eventsource.stores.interface import EventStore

__all__ = ["SQLiteCheckpointRepository", "SQLiteDLQRepository"]


def _value(value: Any) -> Any:
    """A parameter as SQLite keeps it: UUIDs as text, times as fixed-width ISO text (all UTC,
    so they sort as text in time order)."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    return value


class _SQLiteRepository(SQLRepository):
    """A connection of its own, opened (and the table created) on first use; WAL lets it share
    the file with a `SQLiteEventStore`."""

    event_store: EventStore | None

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        prefix: str = "",
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
        event_store: EventStore | None = None,
    ) -> None:
        require("aiosqlite", extra="sqlite", feature=type(self).__name__)
        synchronous = synchronous_mode(synchronous)
        self.event_store = event_store
        """The store the package guide's event-id methods look events up in."""
        self.path = str(path)
        self.prefix = prefix
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.table = quote_identifier(prefix + self.TABLE)
        self._ddl = self._schema(prefix)
        self._prepare(self.table, sqlite_param)

    @abstractmethod
    def _schema(self, prefix: str) -> tuple[str, ...]:
        """The statements creating the table, run when the connection opens."""

    async def _upgrade(self, connection: aiosqlite.Connection) -> None:
        """Bring a table an older version created up to date (after `_schema` ran)."""

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        values = tuple(_value(value) for value in params)
        async with self._lock:
            try:
                if self._connection is None:
                    connection = await open_connection(
                        self.path,
                        busy_timeout=self._busy_timeout,
                        synchronous=self._synchronous,
                        ddl=self._ddl,
                        what=f"SQLite {self.TABLE} table",
                    )
                    try:
                        await self._upgrade(connection)
                    except BaseException:
                        await connection.close()
                        raise
                    self._connection = connection
                async with self._connection.execute(sql, values) as cursor:
                    return list(await cursor.fetchall())
            except sqlite3.Error as exc:
                where = f"SQLite {self.table} in {self.path!r}"
                raise store_error(f"{where}: {what}: {exc}", exc) from exc

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


class SQLiteCheckpointRepository(_SQLiteRepository, SQLCheckpointRepository):
    """Checkpoints in the table `{prefix}checkpoints` of an SQLite file."""

    def _schema(self, prefix: str) -> tuple[str, ...]:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            " name TEXT PRIMARY KEY, position_commit INTEGER NOT NULL,"
            " position_sequence INTEGER NOT NULL, event_id TEXT, event_type TEXT,"
            " events_processed INTEGER NOT NULL, updated_at TEXT NOT NULL)",
        )


_LETTER_COLUMNS_V1 = (
    "id, subscription, event_id, event_type, position_commit, position_sequence, payload,"
    " error, traceback, attempts, status, first_failed_at, last_failed_at, resolved_at,"
    " resolved_by"
)


class SQLiteDLQRepository(_SQLiteRepository, SQLDLQRepository):
    """Dead letters in the table `{prefix}dead_letters` of an SQLite file."""

    def _schema(self, prefix: str) -> tuple[str, ...]:
        return (self._create_table(self.table), self._create_index(prefix))

    @staticmethod
    def _create_table(table: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {table} ("
            " id TEXT PRIMARY KEY, subscription TEXT NOT NULL, event_id TEXT NOT NULL,"
            " event_type TEXT NOT NULL, position_commit INTEGER NOT NULL,"
            " position_sequence INTEGER NOT NULL, payload TEXT, error TEXT NOT NULL,"
            " traceback TEXT NOT NULL, attempts INTEGER NOT NULL,"
            " status TEXT NOT NULL CHECK (status IN ('failed', 'retrying', 'resolved')),"
            " first_failed_at TEXT NOT NULL, last_failed_at TEXT NOT NULL, resolved_at TEXT,"
            " resolved_by TEXT, raw_payload TEXT, event_version INTEGER, aggregate_id TEXT,"
            " aggregate_type TEXT, aggregate_version INTEGER,"
            " CHECK (payload IS NOT NULL OR raw_payload IS NOT NULL),"
            " UNIQUE (subscription, event_id))"
        )

    def _create_index(self, prefix: str) -> str:
        return (
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(prefix + 'dead_letters_status_idx')}"
            f" ON {self.table} (subscription, status, first_failed_at)"
        )

    async def _upgrade(self, connection: aiosqlite.Connection) -> None:
        """A table of a version without `raw_payload` (where `payload` was NOT NULL) is
        rebuilt in one transaction: SQLite cannot drop a NOT NULL constraint in place."""
        if await self._has_raw_payload(connection):
            return
        old = quote_identifier(self.prefix + "dead_letters_before_raw_payload")
        await connection.execute("BEGIN IMMEDIATE")
        try:
            if not await self._has_raw_payload(connection):  # another process may have done it
                await connection.execute(f"ALTER TABLE {self.table} RENAME TO {old}")
                await connection.execute(self._create_table(self.table))
                await connection.execute(
                    f"INSERT INTO {self.table} ({_LETTER_COLUMNS_V1})"
                    f" SELECT {_LETTER_COLUMNS_V1} FROM {old}"
                )
                await connection.execute(f"DROP TABLE {old}")
                await connection.execute(self._create_index(self.prefix))
            await connection.execute("COMMIT")
        except BaseException:
            await connection.execute("ROLLBACK")
            raise

    async def _has_raw_payload(self, connection: aiosqlite.Connection) -> bool:
        async with connection.execute(f"PRAGMA table_info({self.table})") as cursor:
            return any(row[1] == "raw_payload" for row in await cursor.fetchall())
