"""`PostgreSQLSnapshotStore`: snapshots in the same database (and schema) as the events."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from eventsource._internal.pg_table import PostgreSQLTable
from eventsource.snapshots.interface import Snapshot, SnapshotStore

if TYPE_CHECKING:
    pass

__all__ = ["PostgreSQLSnapshotStore"]


class PostgreSQLSnapshotStore(PostgreSQLTable, SnapshotStore):
    """Snapshots in `{schema}.{prefix}snapshots`, created by the same migrations as the event
    table (`create_schema()` on either store creates both).

    Build it from the `AsyncEngine` the event store uses (or `from_url`). It keeps up to
    `max_connections` pooled connections checked out for its statements.
    """

    TABLE = "snapshots"

    def _statements(self, t: str) -> None:
        self._save_sql = (
            f"INSERT INTO {t} AS kept (aggregate_id, aggregate_type, version, schema_version,"
            " state, created_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6)"
            " ON CONFLICT (aggregate_id) DO UPDATE SET aggregate_type = excluded.aggregate_type,"
            " version = excluded.version, schema_version = excluded.schema_version,"
            " state = excluded.state, created_at = excluded.created_at"
            " WHERE kept.version <= excluded.version"
            " OR kept.schema_version <> excluded.schema_version"
        )
        self._get_sql = (
            f"SELECT aggregate_id, aggregate_type, version, schema_version, state::text,"
            f" created_at FROM {t} WHERE aggregate_id = $1"
        )
        self._delete_sql = f"DELETE FROM {t} WHERE aggregate_id = $1"
        self._invalidate_sql = (
            f"DELETE FROM {t} WHERE aggregate_type = $1"
            " AND ($2::integer IS NULL OR schema_version < $2::integer)"
        )

    async def save(self, snapshot: Snapshot) -> None:
        async with self._driver(f"save the snapshot of {snapshot.aggregate_id}") as conn:
            await conn.execute(
                self._save_sql,
                snapshot.aggregate_id,
                snapshot.aggregate_type,
                snapshot.version,
                snapshot.schema_version,
                snapshot.state,
                snapshot.created_at,
            )

    async def get(self, aggregate_id: UUID, aggregate_type: str | None = None) -> Snapshot | None:
        async with self._driver(f"read the snapshot of {aggregate_id}") as conn:
            row = await conn.fetchrow(self._get_sql, aggregate_id)
        if row is None or (aggregate_type and row[1] != aggregate_type):
            return None
        return Snapshot(UUID(str(row[0])), row[1], row[2], row[3], row[4], row[5])

    async def delete(self, aggregate_id: UUID) -> bool:
        async with self._driver(f"delete the snapshot of {aggregate_id}") as conn:
            status = await conn.execute(self._delete_sql, aggregate_id)
        return bool(status != "DELETE 0")

    async def invalidate(
        self, aggregate_type: str, *, schema_version_below: int | None = None
    ) -> int:
        async with self._driver(f"invalidate {aggregate_type} snapshots") as conn:
            status = await conn.execute(self._invalidate_sql, aggregate_type, schema_version_below)
        return int(str(status).rsplit(" ", 1)[-1])
