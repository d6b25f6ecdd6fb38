"""`PostgreSQLKeyStore`: subject keys in the same database (and schema) as the events."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from eventsource._internal.pg_table import PostgreSQLTable
from eventsource.gdpr.interface import KeyStore, new_key

if TYPE_CHECKING:
    pass

__all__ = ["PostgreSQLKeyStore"]


class PostgreSQLKeyStore(PostgreSQLTable, KeyStore):
    """Keys in `{schema}.{prefix}gdpr_keys`, created by the same migrations as the event
    table (`create_schema()` on any PostgreSQL store creates it).

    A missing key is created in two autocommitted statements: an ``INSERT ... ON CONFLICT
    DO NOTHING`` (which waits for a concurrent insert of the same subject to commit) and a
    ``SELECT`` that runs on a fresh snapshot, so concurrent creators in any number of
    processes all read back the one key that was committed first. Subjects are inserted in
    sorted order, so two multi-subject inserts cannot deadlock.
    """

    TABLE = "gdpr_keys"

    def _statements(self, t: str) -> None:
        self._get_sql = f"SELECT subject, key FROM {t} WHERE subject = ANY($1::text[])"
        self._create_sql = (
            f"INSERT INTO {t} (subject, key)"
            " SELECT * FROM unnest($1::text[], $2::bytea[]) ORDER BY 1"
            " ON CONFLICT (subject) DO NOTHING"
        )
        self._delete_sql = f"DELETE FROM {t} WHERE subject = $1"

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
