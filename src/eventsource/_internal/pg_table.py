"""`PostgreSQLTable`: what every PostgreSQL part beside the event store shares (snapshots,
checkpoints and dead letters, outbox and inbox, saga timers, GDPR keys).

Each part owns one table `{schema}.{prefix}<TABLE>` created by the same numbered migrations
as the events table, runs its statements on up to `max_connections` pooled connections of an
engine it is given (or owns, from `from_url`, and disposes of on `close`), and can be built
beside a `PostgreSQLEventStore` with `for_store`.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, ClassVar, Self

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource.migrations import apply_postgresql_migrations, check_names

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PostgreSQLTable"]


class PostgreSQLTable:
    """Engine, schema and prefix, pooled connections, migrations and closing of one table.

    The engine may also be given as an `async_sessionmaker`, an `AsyncConnection` or an
    `AsyncSession` (the package guide builds repositories from a connection): the part uses
    that engine's pool, not the connection's transaction.
    """

    TABLE: ClassVar[str]
    """The table's name without schema and prefix (declared, not set, so that a mixin after
    this class in the method resolution order may set it)."""

    def __init__(
        self,
        engine: AsyncEngine | Any,
        *,
        schema: str = "public",
        prefix: str = "",
        max_connections: int = 4,
        _owns_engine: bool = False,
    ) -> None:
        require("asyncpg", extra="postgresql", feature=type(self).__name__)
        check_names(schema, prefix)
        self.engine: AsyncEngine = pg.engine_of(pg.engine_behind(engine))
        self.schema = schema
        self.prefix = prefix
        self._owns_engine = _owns_engine
        self._connections = pg.ConnectionCache(self.engine, max_connections)
        self.table = f"{quote_identifier(schema)}.{quote_identifier(prefix + self.TABLE)}"
        self._statements(self.table)

    def _statements(self, t: str) -> None:
        """Build the part's SQL for its table `t` (quoted, with schema), once."""

    @classmethod
    def from_url(
        cls, url: str, *, schema: str = "public", prefix: str = "", **engine_kwargs: Any
    ) -> Self:
        """The part with an engine of its own (pool of 4 unless `pool_size` says otherwise),
        disposed of by `close()`."""
        require("asyncpg", extra="postgresql", feature=cls.__name__)
        engine_kwargs.setdefault("pool_size", 4)
        return cls(
            pg.create_engine(url, **engine_kwargs), schema=schema, prefix=prefix, _owns_engine=True
        )

    @classmethod
    def for_store(cls, store: Any) -> Self:
        """The part beside a `PostgreSQLEventStore`'s events (same engine, schema, prefix)."""
        return cls(store.engine, schema=store.schema, prefix=store.prefix)

    def _driver(self, what: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """A pooled asyncpg connection; errors are mapped to typed ones naming `what`."""
        return self._connections.checkout(f"PostgreSQL {self.table}: {what}")

    async def create_schema(self, *, allow_newer: bool = False) -> list[int]:
        """Apply the PostgreSQL migrations not applied yet (every table of the schema and
        prefix, see `PostgreSQLEventStore.create_schema`); the numbers applied."""
        async with self._driver("create_schema") as conn:
            return await apply_postgresql_migrations(
                conn, schema=self.schema, prefix=self.prefix, allow_newer=allow_newer
            )

    async def close(self) -> None:
        """Return the connections; dispose of the engine when it is the part's own."""
        await self._connections.close()
        if self._owns_engine:
            await self.engine.dispose()
