"""The raw sides of the PostgreSQL benchmark (the library's side is `_common.Lib`): asyncpg on
the library's own table and statements ("same schema"), and asyncpg on a minimal hand-written
design.

Every side offers the same operations as `Lib` (append, load, command, catch-up, follow the
feed), and identifies the events it wrote and read by a key of its own (the same-schema side
by their feed position, like the library, the minimal side by its `gp`), so a reader's missed
events are counted alike on every side.

Same schema: the SQL is the library's, recorded when the side is built (see `_capture`): the
append statement with its arguments rebuilt from a template, the stream read as the library
issued it for a probe stream (the stream id swapped), the feed's horizon statement and its
two page statements as the library issued them. Only the order of the page arguments
(horizon, then after-position, then limit) is written here by hand. Rows are decoded with
json.loads, like any hand-written program would.

Minimal: what a user writes by hand (DESIGN.md "Performance targets"): a 6-column table
`(gp bigserial PK, stream_id uuid, version int, event_type text, payload jsonb, txid xid8
DEFAULT pg_current_xact_id())`, unique (stream_id, version), an index on (txid, gp), payload
= the event's domain fields, json.loads, no NOTIFY; the feed is read below the xmin horizon
of the cluster's in-progress transactions, ordered by (txid, gp).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Hashable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from _capture import ArgTemplate, Probe, column_index, recording
from _common import NOTE, Conflict, Incremented, Lib, raw_command

from eventsource import ReadOptions
from eventsource._internal.ids import uuid7

Key = Hashable
PROBE_AMOUNT = 7919  # a value no other argument of a probe append has


class SameSchemaSide:
    """Raw asyncpg running the library's own statements on its table (recorded by `build`)."""

    def __init__(self, pool: asyncpg.Pool, lib: Lib) -> None:
        self.pool = pool
        self.lib = lib
        self.append_sql = ""
        self.template: ArgTemplate | None = None
        self.stream_calls: list[tuple[str, tuple[Any, ...]]] = []
        self.stream_probe: UUID | None = None
        self.recorded_streams: dict[UUID, list[tuple[str, tuple[Any, ...]]]] = {}
        self.horizon: tuple[str, tuple[Any, ...]] = ("", ())
        self.first_page = self.next_page = ""
        self.payload_column = self.version_column = self.feed_payload_column = 0

    @classmethod
    async def build(cls, pool: asyncpg.Pool, lib: Lib) -> SameSchemaSide:
        """Record the library's statements: one append of a probe event after version 3,
        one load of that probe stream, one read of the feed in pages of one event."""
        side = cls(pool, lib)
        store = lib.store
        probe_id = uuid4()
        await lib.append(probe_id, 0, [1, 1, 1])
        event = Incremented(amount=PROBE_AMOUNT)
        with recording(asyncpg.connection.Connection, "fetch") as calls:
            await store.append_events(probe_id, "Counter", [event], 3)
        probe = Probe(
            probe_id, "Counter", 3, event.event_id, "Incremented", PROBE_AMOUNT, event.occurred_at
        )
        inserts = [c for c in calls if any(_holds(a, event.event_id) for a in c[1])]
        if len(inserts) != 1:
            raise ValueError(f"expected one append statement, recorded {calls!r}")
        side.append_sql, args = inserts[0]
        side.template = ArgTemplate.of(args, probe)

        with recording(asyncpg.connection.Connection, "fetch") as calls:
            await lib.load(probe_id)
        side.stream_calls = [c for c in calls if probe_id in c[1]]
        side.stream_probe = probe_id
        side.payload_column = column_index(side.stream_calls[0][0], "payload")
        side.version_column = column_index(side.stream_calls[0][0], "aggregate_version")

        with recording(asyncpg.connection.Connection, "fetch") as calls:
            async for _ in store.read_all(ReadOptions(batch_size=1, limit=2)):
                pass
        if len(calls) != 3 or len(calls[1][1]) != 2 or len(calls[2][1]) != 4:
            raise ValueError(
                "the library's feed read is no longer horizon + first page + next page: "
                f"update benchmarks/_pg_sides.py ({calls!r})"
            )
        side.horizon = calls[0]
        side.first_page, side.next_page = calls[1][0], calls[2][0]
        side.feed_payload_column = column_index(side.first_page, "payload")
        # What the raw side writes, the library reads back as its own events.
        check = uuid4()
        await side.append(check, 0, [5, 6])
        if await lib.load(check) != (2, 11) or await side.load(check) != (2, 11):
            raise ValueError("the library does not read back what the same-schema side wrote")
        return side

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        return (await self.append_keyed(aggregate_id, version, amounts))[0]

    async def append_keyed(
        self, aggregate_id: UUID, version: int, amounts: list[int]
    ) -> tuple[int, list[Key]]:
        assert self.template is not None
        now = datetime.now(UTC)
        ids = [uuid7() for _ in amounts]  # the library's ids: same index behaviour
        payloads = self.template.payloads(aggregate_id, version, ids, now, amounts)
        args = self.template.statement_args(
            aggregate_id, "Counter", version, ids, "Incremented", now, payloads
        )
        async with self.pool.acquire() as conn:
            try:
                rows = await conn.fetch(self.append_sql, *args)
            except asyncpg.UniqueViolationError:
                rows = []
        if not rows:
            raise Conflict
        return version + len(amounts), [(int(r[0]), r[1]) for r in rows]

    async def record_stream(self, aggregate_id: UUID) -> int:
        """Record the library's statements for loading this stream (a long stream takes
        several pages: `load` replays them all); returns how many statements that is."""
        with recording(asyncpg.connection.Connection, "fetch") as calls:
            await self.lib.load(aggregate_id)
        self.recorded_streams[aggregate_id] = [c for c in calls if aggregate_id in c[1]]
        return len(self.recorded_streams[aggregate_id])

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        """The library's statements for this stream if recorded, else those it issued for
        the short probe stream, with the stream id swapped (fine for streams of one page)."""
        total = version = 0
        p, v = self.payload_column, self.version_column
        calls = self.recorded_streams.get(aggregate_id)
        async with self.pool.acquire() as conn:
            for sql, args in calls or self.stream_calls:
                swapped = (
                    args if calls else [aggregate_id if a == self.stream_probe else a for a in args]
                )
                for row in await conn.fetch(sql, *swapped):
                    total += json.loads(row[p])["amount"]
                    version = row[v]
        return version, total

    async def command(self, aggregate_id: UUID) -> None:
        await raw_command(self, aggregate_id)

    async def _pages(
        self, conn: asyncpg.Connection, after: tuple[int, int] | None, page: int
    ) -> AsyncIterator[list[Any]]:
        horizon = (await conn.fetch(self.horizon[0], *self.horizon[1]))[0][0]
        while True:
            if after is None:
                rows = await conn.fetch(self.first_page, horizon, page)
            else:
                rows = await conn.fetch(self.next_page, horizon, after[0], after[1], page)
            yield rows
            if len(rows) < page:
                return
            after = (rows[-1][0], rows[-1][1])

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, int]:
        total = count = 0
        p = self.feed_payload_column
        async with self.pool.acquire() as conn:
            async for rows in self._pages(conn, None, batch):
                for row in rows[: limit - count]:
                    total += json.loads(row[p]).get("amount", 0)
                count = min(limit, count + len(rows))
                if count >= limit:
                    break
        return total, count

    async def start(self) -> Any:
        position = await self.lib.store.current_position()  # setup, not timed
        return (position.commit, position.sequence) if position.commit else None

    async def follow(self, after: Any) -> tuple[Any, list[Key]]:
        keys: list[Key] = []
        p = self.feed_payload_column
        async with self.pool.acquire() as conn:
            async for rows in self._pages(conn, after, 1000):
                for row in rows:
                    json.loads(row[p])
                    keys.append((int(row[0]), row[1]))
                if rows:
                    after = (rows[-1][0], rows[-1][1])
        return after, keys


class MinimalSide:
    """Raw asyncpg on the minimal hand-written design (table `minimal_events`)."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        t = self.table = f'"{schema}".minimal_events'
        self.ddl = [
            f"CREATE TABLE {t} (gp bigserial PRIMARY KEY, stream_id uuid NOT NULL,"
            " version int NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL,"
            " txid xid8 NOT NULL DEFAULT pg_current_xact_id(), UNIQUE (stream_id, version))",
            f"CREATE INDEX ON {t} (txid, gp)",
        ]
        self.append_sql = (
            f"INSERT INTO {t} (stream_id, version, event_type, payload)"
            " SELECT $1, $2 + e.ord, 'Incremented', e.payload::jsonb"
            " FROM unnest($3::text[]) WITH ORDINALITY AS e(payload, ord)"
            " RETURNING txid, gp"
        )
        self.stream_sql = (
            f"SELECT version, event_type, payload::text FROM {t}"
            " WHERE stream_id = $1 ORDER BY version"
        )
        self.feed_sql = (
            f"SELECT txid, gp, stream_id, version, event_type, payload::text FROM {t}"
            " WHERE (txid, gp) > ($1::xid8, $2::bigint)"
            " AND txid < pg_snapshot_xmin(pg_current_snapshot())"
            " ORDER BY txid, gp LIMIT $3"
        )

    async def create(self) -> None:
        async with self.pool.acquire() as conn:
            for statement in self.ddl:
                await conn.execute(statement)

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        return (await self.append_keyed(aggregate_id, version, amounts))[0]

    async def append_keyed(
        self, aggregate_id: UUID, version: int, amounts: list[int]
    ) -> tuple[int, list[Key]]:
        payloads = [json.dumps({"amount": a, "note": NOTE}) for a in amounts]
        async with self.pool.acquire() as conn:
            try:
                rows = await conn.fetch(self.append_sql, aggregate_id, version, payloads)
            except asyncpg.UniqueViolationError:
                raise Conflict from None
        return version + len(amounts), [r[1] for r in rows]

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(self.stream_sql, aggregate_id)
        total = 0
        for row in rows:
            total += json.loads(row[2])["amount"]
        return (rows[-1][0] if rows else 0), total

    async def command(self, aggregate_id: UUID) -> None:
        await raw_command(self, aggregate_id)

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, int]:
        after, total, count = (0, 0), 0, 0
        async with self.pool.acquire() as conn:
            while count < limit:
                rows = await conn.fetch(
                    self.feed_sql, after[0], after[1], min(batch, limit - count)
                )
                for row in rows:
                    total += json.loads(row[5]).get("amount", 0)
                count += len(rows)
                if not rows:
                    break
                after = (rows[-1][0], rows[-1][1])
        return total, count

    async def start(self) -> Any:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT txid, gp FROM {self.table}"
                " WHERE txid < pg_snapshot_xmin(pg_current_snapshot())"
                " ORDER BY txid DESC, gp DESC LIMIT 1"
            )
        return (row[0], row[1]) if row else (0, 0)

    async def follow(self, after: Any) -> tuple[Any, list[Key]]:
        keys: list[Key] = []
        async with self.pool.acquire() as conn:
            while True:
                rows = await conn.fetch(self.feed_sql, after[0], after[1], 1000)
                for row in rows:
                    json.loads(row[5])
                    keys.append(row[1])
                if rows:
                    after = (rows[-1][0], rows[-1][1])
                if len(rows) < 1000:
                    return after, keys


Side = Lib | SameSchemaSide | MinimalSide


def _holds(arg: Any, value: UUID) -> bool:
    return arg == value or (isinstance(arg, list) and value in arg)
