"""The raw sides of the SQLite benchmark (the library's side is `_common.Lib` on a
`SQLiteEventStore`): aiosqlite on the library's own table ("same schema") and on a minimal
table.

The raw connection is opened the way the library opens its own: autocommit, WAL,
`synchronous = FULL`, `busy_timeout` 10 s; every write runs in `BEGIN IMMEDIATE ... COMMIT`.
The side holds a writer and a reader connection, like the store.

Same schema: the library's table and indexes (`event_ddl`), the statements it runs written
out by hand (its statements run inside one function on aiosqlite's thread, so they cannot be
recorded from `execute` as on PostgreSQL): an append reads the stream's version and inserts
its 13-column lean rows (ids from `uuid7`, the correlation id = the event id, the domain
fields as payload) in one multi-row INSERT; a load and a page of the feed select the columns
the library selects; payloads are decoded with json.loads. It isolates the library's Python
cost from the cost of its wider row and its indexes.

Minimal: `(gp INTEGER PRIMARY KEY, stream_id, version, event_type, payload)` with
UNIQUE (stream_id, version), payload = the event's domain fields, json.loads; an append is one
multi-row INSERT in BEGIN IMMEDIATE, the unique constraint doing optimistic concurrency.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiosqlite
from _common import NOTE, Conflict, Lib, raw_command

from eventsource._internal.ids import uuid7
from eventsource.stores._sqlite_rows import INSERT_COLUMNS, LOAD_COLUMNS, READ_COLUMNS, event_ddl

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


class SameSchemaSide(_Raw):
    """Raw aiosqlite on the library's table `events` (in a file of its own)."""

    table = "events"
    rows_per_insert = 500  # 13 values a row: as the library, below SQLite's variable limit

    @classmethod
    async def open(cls, path: str) -> SameSchemaSide:
        side = cls(await connect(path), await connect(path))
        for statement in event_ddl(cls.table):
            await side.writer.execute(statement)
        return side

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        stream = str(aggregate_id)
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        conn = self.writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            async with conn.execute(
                "SELECT COALESCE(MAX(aggregate_version), 0) FROM events WHERE aggregate_id = ?",
                (stream,),
            ) as cursor:
                row = await cursor.fetchone()
            if row is None or row[0] != version:
                raise Conflict
            for start in range(0, len(amounts), self.rows_per_insert):
                chunk = amounts[start : start + self.rows_per_insert]
                values: list[Any] = []
                for n, amount in enumerate(chunk, start=version + start + 1):
                    event_id = str(uuid7())
                    values += [
                        event_id,
                        "Incremented",
                        1,
                        stream,
                        "Counter",
                        n,
                        None,
                        now,
                        now,
                        json.dumps({"amount": amount, "note": NOTE}),
                        event_id,
                        None,
                        None,
                    ]
                await conn.execute(
                    f"INSERT INTO events ({INSERT_COLUMNS}) VALUES "
                    + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
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
            f"SELECT {LOAD_COLUMNS} FROM events WHERE aggregate_id = ? ORDER BY aggregate_version",
            (str(aggregate_id),),
        ) as cursor:
            rows = await cursor.fetchall()
        total = 0
        for row in rows:
            total += json.loads(row[3])["amount"]
        return (rows[-1][4] if rows else 0), total

    async def catch_up(self, limit: int) -> tuple[int, int]:
        total = count = after = 0
        while count < limit:
            page = min(BATCH, limit - count)
            async with self.reader.execute(
                f"SELECT {READ_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
                (after, page),
            ) as cursor:
                rows = await cursor.fetchall()
            for row in rows:
                total += json.loads(row[3]).get("amount", 0)
            count += len(rows)
            if len(rows) < page:
                break
            after = rows[-1][0]
        return total, count


Side = Lib | SameSchemaSide | MinimalSide
