"""`PostgreSQLKeyStore`: subject keys in the same database (and schema) as the events."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Self

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource.gdpr.interface import KeyStore, new_key
from eventsource.migrations import apply_postgresql_migrations, check_names

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["PostgreSQLKeyStore"]


class PostgreSQLKeyStore(KeyStore):
    """Keys in `{schema}.{prefix}gdpr_keys`, created by the same migrations as the event
    table (`create_schema()` on any PostgreSQL store creates it).

    A missing key is created in two autocommitted statements: an ``INSERT ... ON CONFLICT
    DO NOTHING`` (which waits for a concurrent insert of the same subject to commit) and a
    ``SELECT`` that runs on a fresh snapshot, so concurrent creators in any number of
    processes all read back the one key that was committed first. Subjects are inserted in
    sorted order, so two multi-subject inserts cannot deadlock.
    """

    def __init__(
        self,
        engine: AsyncEngine | Any,
        *,
        schema: str = "public",
        prefix: str = "",
        max_connections: int = 4,
        _owns_engine: bool = False,
    ) -> None:
        require("asyncpg", extra="postgresql", feature="PostgreSQLKeyStore")
        check_names(schema, prefix)
        self.engine: AsyncEngine = pg.engine_of(engine)
        self.schema = schema
        self.prefix = prefix
        self._owns_engine = _owns_engine
        self._connections = pg.ConnectionCache(self.engine, max_connections)
        t = self.table = f"{quote_identifier(schema)}.{quote_identifier(prefix + 'gdpr_keys')}"
        self._get_sql = f"SELECT subject, key FROM {t} WHERE subject = ANY($1::text[])"
        self._create_sql = (
            f"INSERT INTO {t} (subject, key)"
            " SELECT * FROM unnest($1::text[], $2::bytea[]) ORDER BY 1"
            " ON CONFLICT (subject) DO NOTHING"
        )
        self._delete_sql = f"DELETE FROM {t} WHERE subject = $1"

    @classmethod
    def from_url(
        cls, url: str, *, schema: str = "public", prefix: str = "", **engine_kwargs: Any
    ) -> Self:
        """A key store with its own engine, disposed of by `close()`."""
        require("asyncpg", extra="postgresql", feature="PostgreSQLKeyStore")
        engine_kwargs.setdefault("pool_size", 4)
        return cls(
            pg.create_engine(url, **engine_kwargs), schema=schema, prefix=prefix, _owns_engine=True
        )

    def _driver(self, what: str) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._connections.checkout(f"PostgreSQL keys {self.table}: {what}")

    async def create_schema(self, *, allow_newer: bool = False) -> list[int]:
        """Apply the PostgreSQL migrations not applied yet (see `PostgreSQLEventStore`)."""
        async with self._driver("create_schema") as conn:
            return await apply_postgresql_migrations(
                conn, schema=self.schema, prefix=self.prefix, allow_newer=allow_newer
            )

    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        wanted = sorted(set(subjects))
        if not wanted:
            return {}
        async with self._driver("read keys") as conn:
            rows = await conn.fetch(self._get_sql, wanted)
        return {row[0]: bytes(row[1]) for row in rows}

    async def get_or_create_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        wanted = sorted(set(subjects))
        if not wanted:
            return {}
        async with self._driver("create keys") as conn:
            rows = await conn.fetch(self._get_sql, wanted)
            keys = {row[0]: bytes(row[1]) for row in rows}
            missing = [s for s in wanted if s not in keys]
            if missing:
                await conn.execute(self._create_sql, missing, [new_key() for _ in missing])
                rows = await conn.fetch(self._get_sql, missing)
                keys.update((row[0], bytes(row[1])) for row in rows)
        return keys

    async def delete_key(self, subject: str) -> bool:
        async with self._driver(f"forget subject {subject!r}") as conn:
            status = await conn.execute(self._delete_sql, subject)
        return bool(status != "DELETE 0")

    async def close(self) -> None:
        await self._connections.close()
        if self._owns_engine:
            await self.engine.dispose()
