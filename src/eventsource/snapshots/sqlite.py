"""`SQLiteSnapshotStore`: snapshots in a table of an SQLite file (usually the events' file)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from uuid import UUID

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import OwnConnection, changed_rows, fetch_all
from eventsource.snapshots.interface import Snapshot, SnapshotStore

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
        self.path = str(path)
        t = quote_identifier(table)
        ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " aggregate_id TEXT PRIMARY KEY, aggregate_type TEXT NOT NULL,"
            " version INTEGER NOT NULL, schema_version INTEGER NOT NULL,"
            " state TEXT NOT NULL, created_at TEXT NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(table + '_type')}"
            f" ON {t} (aggregate_type, schema_version)",
        )
        self._db = OwnConnection(
            self.path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            ddl=ddl,
            what="SQLite snapshot store",
            where=f"SQLite snapshots {self.path!r}",
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

    async def save(self, snapshot: Snapshot) -> None:
        await self._db.run(
            f"save the snapshot of {snapshot.aggregate_id}",
            changed_rows,
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
        rows = await self._db.run(
            f"read the snapshot of {aggregate_id}", fetch_all, self._get_sql, (str(aggregate_id),)
        )
        if not rows or (aggregate_type and rows[0][1] != aggregate_type):
            return None
        row = rows[0]
        return Snapshot(
            UUID(row[0]), row[1], row[2], row[3], row[4], datetime.fromisoformat(row[5])
        )

    async def delete(self, aggregate_id: UUID) -> bool:
        changed = await self._db.run(
            f"delete the snapshot of {aggregate_id}",
            changed_rows,
            self._delete_sql,
            (str(aggregate_id),),
        )
        return bool(changed)

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        return await self._db.run(
            f"invalidate {aggregate_type} snapshots",
            changed_rows,
            self._invalidate_sql,
            (aggregate_type, schema_version_below, schema_version_below),
        )

    async def close(self) -> None:
        await self._db.close()
