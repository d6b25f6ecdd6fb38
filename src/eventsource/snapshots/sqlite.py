"""`SQLiteSnapshotStore`: snapshots in a table of an SQLite file (usually the events' file)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import open_connection, store_error, synchronous_mode
from eventsource.snapshots.interface import Snapshot, SnapshotStore

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteSnapshotStore"]


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the table `table` of an SQLite file, on a connection of its own (WAL lets
    it share the file with a `SQLiteEventStore`). Created on first use."""

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        table: str = "snapshots",
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> None:
        require("aiosqlite", extra="sqlite", feature="SQLiteSnapshotStore")
        synchronous = synchronous_mode(synchronous)
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        t = quote_identifier(table)
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " aggregate_id TEXT PRIMARY KEY, aggregate_type TEXT NOT NULL,"
            " version INTEGER NOT NULL, schema_version INTEGER NOT NULL,"
            " state TEXT NOT NULL, created_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_type')}"
            f" ON {t} (aggregate_type, schema_version)",
        )
        self._save_sql = (
            f"INSERT INTO {t} (aggregate_id, aggregate_type, version, schema_version, state,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (aggregate_id) DO UPDATE SET aggregate_type = excluded.aggregate_type,"
            " version = excluded.version, schema_version = excluded.schema_version,"
            " state = excluded.state, created_at = excluded.created_at"
            f" WHERE {t}.version <= excluded.version"
            f" OR {t}.schema_version <> excluded.schema_version"
        )
        self._get_sql = (
            f"SELECT aggregate_id, aggregate_type, version, schema_version, state, created_at"
            f" FROM {t} WHERE aggregate_id = ?"
        )
        self._delete_sql = f"DELETE FROM {t} WHERE aggregate_id = ?"
        self._invalidate_sql = (
            f"DELETE FROM {t} WHERE aggregate_type = ? AND (? IS NULL OR schema_version < ?)"
        )

    async def _execute(self, what: str, sql: str, params: tuple[Any, ...]) -> list[Any] | int:
        """Rows of a SELECT, or the number of rows a write changed."""
        async with self._lock:
            try:
                if self._connection is None:
                    self._connection = await open_connection(
                        self.path,
                        busy_timeout=self._busy_timeout,
                        synchronous=self._synchronous,
                        ddl=self._ddl,
                        what="SQLite snapshot store",
                    )
                async with self._connection.execute(sql, params) as cursor:
                    if sql.startswith("SELECT"):
                        return list(await cursor.fetchall())
                    return int(cursor.rowcount)
            except sqlite3.Error as exc:
                raise store_error(f"SQLite snapshots {self.path!r}: {what}: {exc}", exc) from exc

    async def save(self, snapshot: Snapshot) -> None:
        await self._execute(
            f"save the snapshot of {snapshot.aggregate_id}",
            self._save_sql,
            (
                str(snapshot.aggregate_id),
                snapshot.aggregate_type,
                snapshot.version,
                snapshot.schema_version,
                snapshot.state,
                snapshot.created_at.isoformat(),
            ),
        )

    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        rows = await self._execute(
            f"read the snapshot of {aggregate_id}", self._get_sql, (str(aggregate_id),)
        )
        assert isinstance(rows, list)
        if not rows or (aggregate_type and rows[0][1] != aggregate_type):
            return None
        row = rows[0]
        return Snapshot(
            UUID(row[0]), row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5])
        )

    async def delete(self, aggregate_id: UUID) -> bool:
        changed = await self._execute(
            f"delete the snapshot of {aggregate_id}", self._delete_sql, (str(aggregate_id),)
        )
        return bool(changed)

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        changed = await self._execute(
            f"invalidate {aggregate_type} snapshots",
            self._invalidate_sql,
            (aggregate_type, schema_version_below, schema_version_below),
        )
        assert isinstance(changed, int)
        return changed

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
