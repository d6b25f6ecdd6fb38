"""`PostgreSQLReadModelRepository`: read models in a jsonb table, queried through a GIN index."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Self

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require
from eventsource._internal.sql import check_postgresql_names, quote_identifier
from eventsource.exceptions import StoreSchemaError
from eventsource.readmodels._sql import Dialect, SQLReadModelRepository
from eventsource.readmodels.interface import TModel

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PostgreSQLReadModelRepository"]

POSTGRESQL = Dialect(
    param="${n}",
    json="CAST({p} AS jsonb)",
    # Containment of one object holding every equality: scalars contain only equal scalars
    # of the same JSON type, and the GIN index (jsonb_path_ops) serves it.
    contains="data @> CAST({p} AS jsonb)",
    field="data -> CAST({p} AS text)",
    path="{key}",
    no_limit=None,
)


class PostgreSQLReadModelRepository(SQLReadModelRepository[TModel]):
    """Read models of one class in `{schema}.{table}` (default table `rm_<model_in_snake_case>`),
    created by `create_table()`.

    Build it from an `AsyncEngine` (the event store's, to share its pool) or with `from_url`.
    It keeps up to `max_connections` pooled connections checked out for its statements.
    """

    def __init__(
        self,
        model: type[TModel],
        engine: AsyncEngine | Any,
        *,
        schema: str = "public",
        table: str | None = None,
        max_connections: int = 4,
        _owns_engine: bool = False,
    ) -> None:
        require("asyncpg", extra="postgresql", feature="PostgreSQLReadModelRepository")
        super().__init__(model, table=table)
        check_postgresql_names(schema, self.table, ("", "_data"), what="read-model table name")
        self.engine: AsyncEngine = pg.engine_of(engine)
        self.schema = schema
        self._owns_engine = _owns_engine
        self._connections = pg.ConnectionCache(self.engine, max_connections)
        self.qualified = f"{quote_identifier(schema)}.{quote_identifier(self.table)}"
        self._ddl = (
            f"CREATE SCHEMA IF NOT EXISTS {quote_identifier(schema)}",
            f"CREATE TABLE IF NOT EXISTS {self.qualified} ("
            ' id text COLLATE "C" PRIMARY KEY, data jsonb NOT NULL,'
            " updated_at timestamptz NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {quote_identifier(self.table + '_data')}"
            f" ON {self.qualified} USING gin (data jsonb_path_ops)",
        )
        self._prepare(self.qualified, POSTGRESQL)

    @classmethod
    def from_url(
        cls,
        model: type[TModel],
        url: str,
        *,
        schema: str = "public",
        table: str | None = None,
        **engine_kwargs: Any,
    ) -> Self:
        """A repository with its own engine, disposed of by `close()`."""
        require("asyncpg", extra="postgresql", feature="PostgreSQLReadModelRepository")
        engine_kwargs.setdefault("pool_size", 4)
        return cls(
            model,
            pg.create_engine(url, **engine_kwargs),
            schema=schema,
            table=table,
            _owns_engine=True,
        )

    @contextlib.asynccontextmanager
    async def _driver(self, what: str) -> AsyncIterator[Any]:
        where = f"PostgreSQL read models {self.qualified}: {what}"
        try:
            async with self._connections.checkout(where) as conn:
                yield conn
        except StoreSchemaError as error:
            raise StoreSchemaError(
                f"{where}: the table is missing or outdated ({pg.driver_error(error)}); "
                "run `await repository.create_table()`"
            ) from error.__cause__

    async def create_table(self) -> None:
        """Create the schema, the table and its index unless they exist. Safe to run from
        several processes at once (a transaction-scoped advisory lock serializes them)."""
        async with self._driver("create the table") as conn, conn.transaction():
            # The two-key form: a lock space apart from the migrations' and leases' keys.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('eventsource.readmodels'), hashtext($1))",
                self.qualified,
            )
            for statement in self._ddl:
                await conn.execute(statement)

    async def _fetch(self, what: str, sql: str, *params: Any) -> list[Any]:
        async with self._driver(what) as conn:
            return list(await conn.fetch(sql, *params))

    async def _execute(self, what: str, sql: str, *params: Any) -> int:
        async with self._driver(what) as conn:
            status = await conn.execute(sql, *params)
        return int(str(status).rsplit(" ", 1)[-1])

    async def _execute_many(self, what: str, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        async with self._driver(what) as conn:
            await conn.executemany(sql, rows)  # one transaction, pipelined (asyncpg >= 0.22)

    async def close(self) -> None:
        await self._connections.close()
        if self._owns_engine:
            await self.engine.dispose()
