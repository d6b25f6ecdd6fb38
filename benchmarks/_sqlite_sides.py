"""The raw side of the SQLite benchmark (the library's side is `_common.Lib` on a
`SQLiteEventStore`): aiosqlite on a minimal table. (The "same schema" side, which replayed the
library's recorded statements, went when the library started running each operation as one
function on aiosqlite's thread: its statements no longer pass through `execute`.)

The raw connection is opened the way the library opens its own: autocommit, WAL,
`synchronous = FULL`, `busy_timeout` 10 s; every write runs in `BEGIN IMMEDIATE ... COMMIT`.
The side holds a writer and a reader connection, like the store.

Minimal: `(gp INTEGER PRIMARY KEY, stream_id, version, event_type, payload)` with
UNIQUE (stream_id, version), payload = the event's domain fields, json.loads; an append is one
multi-row INSERT in BEGIN IMMEDIATE, the unique constraint doing optimistic concurrency.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any
from uuid import UUID

import aiosqlite
from _common import NOTE, Conflict, Lib, raw_command

ROWS_PER_INSERT = 500
BATCH = 1000  # rows per page of a read, like ReadOptions' default


async def connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 10000")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = FULL")
    return conn


class _Raw:
    """What both raw sides share: connections and the BEGIN IMMEDIATE transaction."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.writer, self.reader = writer, reader

    async def close(self) -> None:
        await self.reader.close()
        await self.writer.close()


class MinimalSide(_Raw):
    """Raw aiosqlite on the minimal table `minimal_events` (in a file of its own)."""

    table = "minimal_events"

    @classmethod
    async def open(cls, path: str) -> MinimalSide:
        side = cls(await connect(path), await connect(path))
        await side.writer.execute(
            f"CREATE TABLE IF NOT EXISTS {cls.table} (gp INTEGER PRIMARY KEY,"
            " stream_id TEXT NOT NULL, version INTEGER NOT NULL, event_type TEXT NOT NULL,"
            " payload TEXT NOT NULL, UNIQUE (stream_id, version))"
        )
        return side

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        stream = str(aggregate_id)
        conn = self.writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for start in range(0, len(amounts), ROWS_PER_INSERT):
                chunk = amounts[start : start + ROWS_PER_INSERT]
                values: list[Any] = []
                for n, amount in enumerate(chunk, start=version + start + 1):
                    values += [
                        stream,
                        n,
                        "Incremented",
                        json.dumps({"amount": amount, "note": NOTE}),
                    ]
                await conn.execute(
                    f"INSERT INTO {self.table} (stream_id, version, event_type, payload) VALUES "
                    + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                    values,
                )
            await conn.execute("COMMIT")
        except BaseException as exc:
            await conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict from None
            raise
        return version + len(amounts)

    async def command(self, aggregate_id: UUID) -> None:
        await raw_command(self, aggregate_id)

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        async with self.reader.execute(
            f"SELECT version, event_type, payload FROM {self.table}"
            " WHERE stream_id = ? ORDER BY version",
            (str(aggregate_id),),
        ) as cursor:
            rows = await cursor.fetchall()
        total = 0
        for row in rows:
            total += json.loads(row[2])["amount"]
        return (rows[-1][0] if rows else 0), total

    async def catch_up(self, limit: int) -> tuple[int, int]:
        total = count = after = 0
        while count < limit:
            page = min(BATCH, limit - count)
            async with self.reader.execute(
                f"SELECT gp, stream_id, version, event_type, payload FROM {self.table}"
                " WHERE gp > ? ORDER BY gp LIMIT ?",
                (after, page),
            ) as cursor:
                rows = await cursor.fetchall()
            for row in rows:
                total += json.loads(row[4]).get("amount", 0)
            count += len(rows)
            if len(rows) < page:
                break
            after = rows[-1][0]
        return total, count


Side = Lib | MinimalSide
