"""`SQLiteReadModelRepository`: read models in a table of an SQLite file."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import OwnConnection, changed_rows, execute_many, fetch_all
from eventsource.readmodels._sql import Dialect, SQLReadModelRepository
from eventsource.readmodels.interface import TModel

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
        quoted = [key for key in self._keys.values() if '"' in key]
        if quoted:  # SQLite's JSON paths cannot name such a key
            raise ValueError(f"SQLite read models cannot query JSON keys with '\"': {quoted}")
        self.path = str(path)
        t = quote_identifier(self.table)
        self._db = OwnConnection(
            self.path,
            busy_timeout=busy_timeout,
            synchronous=synchronous,
            ddl=(
                f"CREATE TABLE IF NOT EXISTS {t} ("
                " id TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at TEXT NOT NULL)",
            ),
            what=f"SQLite read models {self.table!r}",
            where=f"SQLite read models {self.table!r} in {self.path!r}",
        )
        self._prepare(t, SQLITE)

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        return await self._db.run(what, fetch_all, sql, tuple(map(_value, params)))

    async def _execute(self, what: str, sql: str, *params: Any) -> int:
        return await self._db.run(what, changed_rows, sql, tuple(map(_value, params)))

    async def _execute_many(self, what: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        values = [tuple(map(_value, row)) for row in rows]
        await self._db.run(what, execute_many, sql, values)

    async def close(self) -> None:
        await self._db.close()
