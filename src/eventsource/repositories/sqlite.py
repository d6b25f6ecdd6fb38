"""`SQLiteCheckpointRepository` and `SQLiteDLQRepository`: subscription state in tables of an
SQLite file (usually the events' file)."""

from __future__ import annotations

import functools
import sqlite3
from abc import abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import OwnConnection, fetch_all
from eventsource.repositories._sql import (
    SQLCheckpointRepository,
    SQLDLQRepository,
    SQLRepository,
    sqlite_param,
)

if TYPE_CHECKING:
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
        self.event_store = event_store
        """The store the package guide's event-id methods look events up in."""
        self.path = str(path)
        self.prefix = prefix
        self.table = quote_identifier(prefix + self.TABLE)
        self._db = OwnConnection(
            self.path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            ddl=self._schema(prefix),
            what=f"SQLite {self.TABLE} table",
            where=f"SQLite {self.table} in {self.path!r}",
            prepare=self._upgrade(),
        )
        self._prepare(self.table, sqlite_param)

    @abstractmethod
    def _schema(self, prefix: str) -> tuple[str, ...]:
        """The statements creating the table, run when the connection opens."""

    def _upgrade(self) -> Callable[[sqlite3.Connection], object] | None:
        """What brings a table an older version created up to date (run on the connection's
        thread after `_schema`); it must not hold the repository (the thread keeps its last
        call alive)."""
        return None

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        return await self._db.run(what, fetch_all, sql, tuple(_value(value) for value in params))

    async def close(self) -> None:
        await self._db.close()


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

    def _upgrade(self) -> Callable[[sqlite3.Connection], object]:
        return functools.partial(
            _add_raw_payload,
            table=self.table,
            old=quote_identifier(self.prefix + "dead_letters_before_raw_payload"),
            create_table=self._create_table(self.table),
            create_index=self._create_index(self.prefix),
        )


def _has_raw_payload(conn: sqlite3.Connection, table: str) -> bool:
    return any(row[1] == "raw_payload" for row in conn.execute(f"PRAGMA table_info({table})"))


def _add_raw_payload(
    conn: sqlite3.Connection, table: str, old: str, create_table: str, create_index: str
) -> None:
    """A dead-letter table of a version without `raw_payload` (where `payload` was NOT NULL)
    is rebuilt in one transaction, on the connection's thread: SQLite cannot drop a NOT NULL
    constraint in place."""
    if _has_raw_payload(conn, table):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not _has_raw_payload(conn, table):  # another process may have done it
            conn.execute(f"ALTER TABLE {table} RENAME TO {old}")
            conn.execute(create_table)
            conn.execute(
                f"INSERT INTO {table} ({_LETTER_COLUMNS_V1}) SELECT {_LETTER_COLUMNS_V1} FROM {old}"
            )
            conn.execute(f"DROP TABLE {old}")
            conn.execute(create_index)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
