"""Read models on an SQL table, written once for PostgreSQL and SQLite.

Both dialects run the same statements on a table `(id, data, updated_at)`. They differ in
parameter names (`$1` or `?1`), in how JSON text becomes the `data` column, and in the JSON
functions a query needs: PostgreSQL tests containment of one JSON object (`@>`, which its GIN
index serves), SQLite walks that object with `json_each`. A backend supplies a `Dialect` with
those differences and the statement runners; the statements and the logic live here.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eventsource._internal.clock import utc_now
from eventsource.readmodels.interface import ModelId, ReadModelRepository, TModel

__all__ = ["Dialect", "SQLReadModelRepository"]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The parts of the read-model statements that differ between SQL dialects."""

    param: str
    """The n-th parameter (from 1), as a format string of `n`."""
    json: str
    """The `data` column's value from the JSON text parameter `{p}`."""
    contains: str
    """A condition: the row's `data` holds every key and value of the JSON object `{p}`."""
    field: str
    """The value of a top-level field of `data`, named by the parameter `{p}`, to order by."""
    path: str
    """The value of that parameter naming the JSON key `{key}`."""
    no_limit: int | None
    """The LIMIT parameter meaning "no limit"."""


class SQLReadModelRepository(ReadModelRepository[TModel]):
    """What a backend plugs into: a dialect and ways to run statements."""

    def _prepare(self, table: str, dialect: Dialect) -> None:
        """Build the statements on `table` (quoted) in `dialect`."""

        def p(n: int) -> str:
            return dialect.param.format(n=n)

        self._dialect = dialect
        self._get_sql = f"SELECT CAST(data AS TEXT) FROM {table} WHERE id = {p(1)}"
        self._save_sql = (
            f"INSERT INTO {table} (id, data, updated_at)"
            f" VALUES ({p(1)}, {dialect.json.format(p=p(2))}, {p(3)})"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at"
        )
        self._delete_sql = f"DELETE FROM {table} WHERE id = {p(1)}"
        self._clear_sql = f"DELETE FROM {table}"
        where = f" WHERE {dialect.contains.format(p=p(1))}"
        self._count_sql = f"SELECT count(*) FROM {table}{where}"
        select = f"SELECT id, CAST(data AS TEXT) FROM {table}{where} ORDER BY "
        field = dialect.field.format(p=p(3))
        # By id, by a field ascending, by a field descending; ties in id order.
        self._query_sql = (
            f"{select}id LIMIT {p(2)}",
            f"{select}{field}, id LIMIT {p(2)}",
            f"{select}{field} DESC, id LIMIT {p(2)}",
        )

    @abstractmethod
    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        """Run one query: its rows."""

    @abstractmethod
    async def _execute(self, what: str, sql: str, *params: Any) -> int:
        """Run one write: how many rows it changed."""

    @abstractmethod
    async def _execute_many(self, what: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run one write once per parameter tuple, all or nothing."""

    async def get(self, id: ModelId) -> TModel | None:
        key = str(id)
        rows = await self._fetch(f"read {key!r}", self._get_sql, key)
        return self._load(key, rows[0][0]) if rows else None

    async def save(self, model: TModel) -> None:
        key, data = self._dump(model)
        await self._execute(f"save {key!r}", self._save_sql, key, data, utc_now())

    async def save_many(self, models: Iterable[TModel]) -> None:
        now = utc_now()
        rows = [(key, data, now) for key, data in map(self._dump, models)]
        if rows:
            await self._execute_many(f"save {len(rows)} models", self._save_sql, rows)

    async def delete(self, id: ModelId) -> bool:
        key = str(id)
        return await self._execute(f"delete {key!r}", self._delete_sql, key) > 0

    async def query(
        self,
        *,
        limit: int | None = None,
        order_by: str | None = None,
        descending: bool = False,
        **equals: Any,
    ) -> list[TModel]:
        order = self._order(order_by, limit)
        where = json.dumps(self._where(equals))
        bound = self._dialect.no_limit if limit is None else limit
        if order is None:
            rows = await self._fetch("query", self._query_sql[0], where, bound)
        else:
            path = self._dialect.path.format(key=order)
            sql = self._query_sql[2 if descending else 1]
            rows = await self._fetch(f"query ordered by {order_by}", sql, where, bound, path)
        return [self._load(str(row[0]), row[1]) for row in rows]

    async def count(self, **equals: Any) -> int:
        rows = await self._fetch("count", self._count_sql, json.dumps(self._where(equals)))
        return int(rows[0][0])

    async def clear(self) -> int:
        return await self._execute("clear", self._clear_sql)
