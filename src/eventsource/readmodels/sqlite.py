"""`SQLiteReadModelRepository`: read models in a table of an SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import open_connection, store_error, synchronous_mode
from eventsource.readmodels._sql import Dialect, SQLReadModelRepository
from eventsource.readmodels.interface import TModel

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteReadModelRepository"]

SQLITE = Dialect(
    param="?{n}",
    json="{p}",
    # No stored field differs from the query object's: same JSON type (numbers as one; bools
    # are `true`/`false`, never 1/0) and same value. `data` is the outer row's column
    # (json_each has none of that name); `fullkey` is the `$."key"` path of each key.
    contains=(
        "NOT EXISTS (SELECT 1 FROM json_each({p}) AS wanted"
        " WHERE replace(json_type(data, wanted.fullkey), 'real', 'integer')"
        " IS NOT replace(wanted.type, 'real', 'integer')"
        " OR json_extract(data, wanted.fullkey) IS NOT wanted.value)"
    ),
    field="json_extract(data, {p})",
    path='$."{key}"',
    no_limit=-1,
)


def _value(value: Any) -> Any:
    """A parameter as SQLite keeps it: times as ISO text (UTC, so they sort as text)."""
    return value.isoformat(timespec="microseconds") if isinstance(value, datetime) else value


class SQLiteReadModelRepository(SQLReadModelRepository[TModel]):
    """Read models of one class in the table `table` (default `rm_<model_in_snake_case>`) of
    an SQLite file, on a connection of its own; WAL lets it share the file with a
    `SQLiteEventStore`. The table is created on first use."""

    def __init__(
        self,
        model: type[TModel],
        path: str | Path = "eventsource.db",
        *,
        table: str | None = None,
        busy_timeout: float = 10.0,
        synchronous: str = "FULL",
    ) -> None:
        require("aiosqlite", extra="sqlite", feature="SQLiteReadModelRepository")
        super().__init__(model, table=table)
        synchronous = synchronous_mode(synchronous)
        quoted = [key for key in self._keys.values() if '"' in key]
        if quoted:  # SQLite's JSON paths cannot name such a key
            raise ValueError(f"SQLite read models cannot query JSON keys with '\"': {quoted}")
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        t = quote_identifier(self.table)
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at TEXT NOT NULL)",
        )
        self._prepare(t, SQLITE)

    @contextlib.asynccontextmanager
    async def _connected(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, opened on first use, for one caller at a time; errors mapped."""
        async with self._lock:
            try:
                if self._connection is None:
                    self._connection = await open_connection(
                        self.path,
                        busy_timeout=self._busy_timeout,
                        synchronous=self._synchronous,
                        ddl=self._ddl,
                        what=f"SQLite read models {self.table!r}",
                    )
                yield self._connection
            except sqlite3.Error as exc:
                where = f"SQLite read models {self.table!r} in {self.path!r}"
                raise store_error(f"{where}: {what}: {exc}", exc) from exc

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        async with (
            self._connected(what) as connection,
            connection.execute(sql, tuple(map(_value, params))) as cursor,
        ):
            return list(await cursor.fetchall())

    async def _execute(self, what: str, sql: str, *params: Any) -> int:
        async with (
            self._connected(what) as connection,
            connection.execute(sql, tuple(map(_value, params))) as cursor,
        ):
            return int(cursor.rowcount)

    async def _execute_many(self, what: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        values = [tuple(map(_value, row)) for row in rows]
        async with self._connected(what) as connection:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                await connection.executemany(sql, values)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await connection.execute("ROLLBACK")
                raise
            await connection.execute("COMMIT")

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
