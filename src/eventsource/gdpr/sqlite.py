"""`SQLiteKeyStore`: subject keys in a table of an SQLite file (usually the events' file)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventsource._internal.optional import require
from eventsource._internal.sql import quote_identifier
from eventsource._internal.sqlite import open_connection, store_error, synchronous_mode
from eventsource.gdpr.interface import KeyStore, new_key

if TYPE_CHECKING:
    import aiosqlite

__all__ = ["SQLiteKeyStore"]


class SQLiteKeyStore(KeyStore):
    """Keys in the table `table` of an SQLite file, on a connection of its own, created on
    open. New keys are written with ``INSERT OR IGNORE`` and read back, so two processes
    creating a subject's first key at once both end up with the one that was written first
    (SQLite serializes writers)."""

    def __init__(
        self,
        path: str | Path = "eventsource.db",
        *,
        table: str = "gdpr_keys",
        busy_timeout: float = 10.0,
        synchronous: str = "NORMAL",
    ) -> None:
        require("aiosqlite", extra="sqlite", feature="SQLiteKeyStore")
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous_mode(synchronous)
        self._connection: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        t = quote_identifier(table)
        self._ddl = (
            f"CREATE TABLE IF NOT EXISTS {t} (subject TEXT PRIMARY KEY, key BLOB NOT NULL,"
            " created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        )
        self._table = t

    async def _connect(self) -> aiosqlite.Connection:
        if self._connection is None:
            self._connection = await open_connection(
                self.path,
                busy_timeout=self._busy_timeout,
                synchronous=self._synchronous,
                ddl=self._ddl,
                what="SQLite key store",
            )
        return self._connection

    async def _select(self, conn: aiosqlite.Connection, subjects: list[str]) -> dict[str, bytes]:
        keys: dict[str, bytes] = {}
        for start in range(0, len(subjects), 500):  # under SQLite's bound-parameter limit
            chunk = subjects[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT subject, key FROM {self._table} WHERE subject IN ({marks})"
            async with conn.execute(sql, chunk) as cursor:
                keys.update((row[0], bytes(row[1])) for row in await cursor.fetchall())
        return keys

    async def _run(self, what: str, work: Any) -> Any:
        async with self._lock:
            try:
                return await work(await self._connect())
            except sqlite3.Error as exc:
                raise store_error(f"SQLite key store {self.path!r}: {what}: {exc}", exc) from exc

    async def get_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        wanted = sorted(set(subjects))
        if not wanted:
            return {}

        async def work(conn: aiosqlite.Connection) -> dict[str, bytes]:
            return await self._select(conn, wanted)

        result: dict[str, bytes] = await self._run("read keys", work)
        return result

    async def get_or_create_keys(self, subjects: Collection[str]) -> dict[str, bytes]:
        wanted = sorted(set(subjects))
        if not wanted:
            return {}

        async def work(conn: aiosqlite.Connection) -> dict[str, bytes]:
            keys = await self._select(conn, wanted)
            missing = [s for s in wanted if s not in keys]
            if missing:
                await conn.executemany(
                    f"INSERT OR IGNORE INTO {self._table} (subject, key) VALUES (?, ?)",
                    [(s, new_key()) for s in missing],
                )
                keys.update(await self._select(conn, missing))
            return keys

        result: dict[str, bytes] = await self._run("create keys", work)
        return result

    async def delete_key(self, subject: str) -> bool:
        async def work(conn: aiosqlite.Connection) -> bool:
            cursor = await conn.execute(f"DELETE FROM {self._table} WHERE subject = ?", (subject,))
            changed = cursor.rowcount
            await cursor.close()
            return bool(changed)

        result: bool = await self._run(f"forget subject {subject!r}", work)
        return result

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()
