"""`PostgreSQLCheckpointRepository` and `PostgreSQLDLQRepository`: subscription state in the
same database (and schema) as the events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource._internal import postgresql as pg
from eventsource._internal.clock import utc_now
from eventsource._internal.pg_table import PostgreSQLTable
from eventsource.repositories._sql import (
    Param,
    SQLCheckpointRepository,
    SQLDLQRepository,
    SQLRepository,
    postgresql_param,
)
from eventsource.stores.interface import EventStore, Position
from eventsource.stores.postgresql import PostgreSQLEventStore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["PostgreSQLCheckpointRepository", "PostgreSQLDLQRepository"]


class _PostgreSQLRepository(PostgreSQLTable, SQLRepository):
    """Engine, connections, migrations and error mapping, shared by both repositories."""

    event_store: EventStore | None = None

    def __init__(
        self,
        engine: AsyncEngine | Any,
        *,
        schema: str = "public",
        prefix: str = "",
        max_connections: int = 4,
        event_store: EventStore | None = None,
        _owns_engine: bool = False,
    ) -> None:
        super().__init__(
            engine,
            schema=schema,
            prefix=prefix,
            max_connections=max_connections,
            _owns_engine=_owns_engine,
        )
        self.event_store = event_store
        self._prepare(self.table, postgresql_param)
        self._events: PostgreSQLEventStore | None = None

    async def _reach_store(self) -> EventStore | None:
        """`event_store` when given, else the events table of this schema and prefix (read
        with the default event registry: give `event_store=` for events of another)."""
        if self.event_store is not None:
            return self.event_store
        if self._events is None:
            self._events = PostgreSQLEventStore(
                self.engine, schema=self.schema, prefix=self.prefix, max_connections=1
            )
        return self._events

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        async with self._driver(what) as conn:
            return list(await conn.fetch(sql, *params))

    async def close(self) -> None:
        if self._events is not None:
            await self._events.close()
        await super().close()


class PostgreSQLCheckpointRepository(_PostgreSQLRepository, SQLCheckpointRepository):
    """Checkpoints in `{schema}.{prefix}checkpoints`, created by the same migrations as the
    event table (`create_schema()` on any PostgreSQL store or repository creates all tables).

    Build it from the `AsyncEngine` the event store uses (or `from_url`). It keeps up to
    `max_connections` pooled connections checked out for its statements. `save_in` moves a
    checkpoint inside the caller's transaction and `locked_position_in` reads it there (what
    `DatabaseProjection` does).
    """

    def _prepare(self, table: str, param: Param) -> None:
        super()._prepare(table, param)
        self._save_moved_sql = self._save_sql + " RETURNING 1"
        self._locked_sql = (
            f"SELECT position_commit, position_sequence FROM {table}"
            f" WHERE name = {param(1)} FOR UPDATE"
        )
        # Waits for a transaction inserting the same name to end; then the row is there.
        self._create_sql = (
            f"INSERT INTO {table} (name, position_commit, position_sequence,"
            f" events_processed, updated_at) VALUES ({param(1)}, 0, 0, 0, {param(2)})"
            " ON CONFLICT (name) DO NOTHING"
        )

    async def save_in(
        self,
        connection: AsyncConnection,
        name: str,
        position: Position,
        *,
        event_id: UUID | None = None,
        event_type: str | None = None,
        processed: int = 1,
    ) -> bool:
        """`save`, as a statement of `connection`'s transaction: it commits or rolls back with
        whatever else the transaction wrote. False when the checkpoint was at or past
        `position` already (nothing changed)."""
        params = self._save_params(name, position, event_id, event_type, processed)
        rows = await pg.fetch_in(
            connection, f"PostgreSQL {self.table}: save {name!r}", self._save_moved_sql, *params
        )
        return bool(rows)

    async def locked_position_in(
        self, connection: AsyncConnection, name: str, *, create: bool = False
    ) -> Position | None:
        """The checkpoint's position read in `connection`'s transaction with its row locked
        (`FOR UPDATE`) until the transaction ends: a transaction that is still committing a
        move of it finishes first, so what this reads is settled. With `create`, a missing
        checkpoint is created at `Position.START` in that transaction first (it commits or
        rolls back with it), so there is always a row to lock: two transactions never both
        find none."""
        what = f"PostgreSQL {self.table}: lock {name!r}"
        rows = await pg.fetch_in(connection, what, self._locked_sql, name)
        if not rows and create:
            await pg.fetch_in(connection, what, self._create_sql, name, utc_now())
            rows = await pg.fetch_in(connection, what, self._locked_sql, name)
        return Position(int(rows[0][0]), int(rows[0][1])) if rows else None


class PostgreSQLDLQRepository(_PostgreSQLRepository, SQLDLQRepository):
    """Dead letters in `{schema}.{prefix}dead_letters`, created by the same migrations as the
    event table (`create_schema()` on any PostgreSQL store or repository creates all tables).

    Build it from the `AsyncEngine` the event store uses (or `from_url`). It keeps up to
    `max_connections` pooled connections checked out for its statements.
    """
