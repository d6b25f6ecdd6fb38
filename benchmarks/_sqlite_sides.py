"""The raw sides of the SQLite benchmark (the library's side is `_common.Lib` on a
`SQLiteEventStore`): aiosqlite on the library's own table and statements ("same schema"), and
aiosqlite on a minimal table.

Every raw connection is opened the way the library opens its own: autocommit, WAL,
`synchronous = FULL`, `busy_timeout` 10 s; every write runs in `BEGIN IMMEDIATE ... COMMIT`.
Each side holds a writer and a reader connection, like the store.

Same schema: the statements are the library's, recorded from one probe append and one probe
load when the side is built (see `_capture`): the transaction's statements in order (the
version read, the multi-row INSERT ... RETURNING, whatever else the library sends), the
INSERT's row repeated for more events (500 rows per statement, like the library), the stream
and feed pages as the library issued them. The keyset paging (cursor then LIMIT as the last
two parameters) is written here by hand.

Minimal: `(gp INTEGER PRIMARY KEY, stream_id, version, event_type, payload)` with
UNIQUE (stream_id, version), payload = the event's domain fields, json.loads; an append is one
multi-row INSERT in BEGIN IMMEDIATE, the unique constraint doing optimistic concurrency.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import aiosqlite
from _capture import ArgTemplate, Probe, column_index, recording
from _common import NOTE, Conflict, Incremented, Lib, raw_command
from _pg_sides import PROBE_AMOUNT

from eventsource import ReadOptions
from eventsource._internal.ids import uuid7

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


class SameSchemaSide(_Raw):
    """Raw aiosqlite running the library's own statements on its table."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        super().__init__(writer, reader)
        self.transaction: list[tuple[str, tuple[Any, ...]]] = []
        self.insert_head = self.insert_row = self.insert_tail = ""
        self.template: ArgTemplate | None = None
        self.stream_sql = self.feed_sql = ""
        self.stream_args: tuple[Any, ...] = ()
        self.probe_id = ""
        self.payload_column = self.version_column = self.position_column = 0
        self.feed_payload_column = 0

    @classmethod
    async def build(cls, path: str, lib: Lib) -> SameSchemaSide:
        side = cls(await connect(path), await connect(path))
        store = lib.store
        probe_id = uuid4()
        await lib.append(probe_id, 0, [1, 1, 1])
        event = Incremented(amount=PROBE_AMOUNT)
        with recording(aiosqlite.Connection, "execute") as calls:
            await store.append_events(probe_id, "Counter", [event], 3)
        probe = Probe(
            probe_id, "Counter", 3, event.event_id, "Incremented", PROBE_AMOUNT, event.occurred_at
        )
        if [sql for sql, _ in calls[:1] + calls[-1:]] != ["BEGIN IMMEDIATE", "COMMIT"]:
            raise ValueError(f"the library's append is not one BEGIN IMMEDIATE ... COMMIT: {calls}")
        inserts = [n for n, (_, args) in enumerate(calls) if str(event.event_id) in args]
        if len(inserts) != 1:
            raise ValueError(f"expected one INSERT of the event, recorded {calls!r}")
        side.transaction = calls[1:-1]
        insert_sql, args = calls[inserts[0]]
        side.transaction[inserts[0] - 1] = ("INSERT", ())  # built per append
        head, rest = insert_sql.split(" VALUES ", 1)
        row = rest[: rest.index(")") + 1]
        side.insert_head, side.insert_row, side.insert_tail = head, row, rest[len(row) :]
        side.template = ArgTemplate.of(args, probe)
        side.probe_id = str(probe_id)

        with recording(aiosqlite.Connection, "execute") as calls:
            await lib.load(probe_id)
        reads = [(sql, args) for sql, args in calls if str(probe_id) in args]
        if len(reads) != 1 or reads[0][1][-2:] != (0, BATCH):
            raise ValueError(f"the library's stream read is not one keyset page: {reads}")
        side.stream_sql, side.stream_args = reads[0]
        side.payload_column = column_index(side.stream_sql, "payload")
        side.version_column = column_index(side.stream_sql, "aggregate_version")

        with recording(aiosqlite.Connection, "execute") as calls:
            async for _ in store.read_all(ReadOptions(batch_size=BATCH, limit=1)):
                pass
        if len(calls) != 1 or calls[0][1] != (0, 1):
            raise ValueError(f"the library's feed read is not one keyset page: {calls}")
        side.feed_sql = calls[0][0]
        side.feed_payload_column = column_index(side.feed_sql, "payload")
        side.position_column = column_index(side.feed_sql, "position")
        # What the raw side writes, the library reads back as its own events.
        check = uuid4()
        await side.append(check, 0, [5, 6])
        if await lib.load(check) != (2, 11) or await side.load(check) != (2, 11):
            raise ValueError("the library does not read back what the same-schema side wrote")
        return side

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        assert self.template is not None
        now = datetime.now(UTC)
        ids = [uuid7() for _ in amounts]
        payloads = self.template.payloads(aggregate_id, version, ids, now, amounts)
        values = self.template.rows(
            aggregate_id, "Counter", version, ids, "Incremented", now, payloads
        )
        width = len(self.template.slots)
        conn = self.writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in self.transaction:
                if sql != "INSERT":
                    swapped = [str(aggregate_id) if a == self.probe_id else a for a in args]
                    async with conn.execute(sql, swapped) as cursor:
                        current = await cursor.fetchall()
                    # the library's version check (a one-value row read before its INSERT)
                    if len(current) == 1 and len(current[0]) == 1 and current[0][0] != version:
                        raise Conflict
                    continue
                for start in range(0, len(ids), ROWS_PER_INSERT):
                    rows = min(ROWS_PER_INSERT, len(ids) - start)
                    statement = (
                        f"{self.insert_head} VALUES "
                        + ", ".join([self.insert_row] * rows)
                        + self.insert_tail
                    )
                    chunk = values[start * width : (start + rows) * width]
                    async with conn.execute(statement, chunk) as cursor:
                        await cursor.fetchall()
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
        args = [str(aggregate_id) if a == self.probe_id else a for a in self.stream_args]
        total = version = 0
        p, v = self.payload_column, self.version_column
        while True:
            async with self.reader.execute(self.stream_sql, args) as cursor:
                rows = await cursor.fetchall()
            for row in rows:
                total += json.loads(row[p])["amount"]
                version = row[v]
            if len(rows) < BATCH:
                return version, total
            args[-2] = version

    async def catch_up(self, limit: int) -> tuple[int, int]:
        total = count = after = 0
        p, at = self.feed_payload_column, self.position_column
        while count < limit:
            page = min(BATCH, limit - count)
            async with self.reader.execute(self.feed_sql, (after, page)) as cursor:
                rows = await cursor.fetchall()
            for row in rows:
                total += json.loads(row[p]).get("amount", 0)
            count += len(rows)
            if len(rows) < page:
                break
            after = rows[-1][at]
        return total, count


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


Side = Lib | SameSchemaSide | MinimalSide
