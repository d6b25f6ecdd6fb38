"""The read side of `PostgreSQLEventStore`: streams by version ranges, the global feed by
`(transaction_id, position)` below the horizon, filters in SQL, counts and positions.

A mixin of the store (the statements built in `_build_sql`, the connections and the retry
budget live in `postgresql.py`). Pages are built as the reader consumes them: a stream read
is a version range (no sort, no LIMIT; the first page holds a typical stream whole, so a load
is one round trip), a feed read computes the horizon once per call and pages after the last
position it returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventNotFoundError
from eventsource.stores._postgresql_feed import (
    WRITER_CLASS,
    FeedSql,
    HorizonLag,
    partition_clause,
)
from eventsource.stores._postgresql_rows import (
    FIRST_STREAM_PAGE,
    LOAD_COLUMNS,
    READ_COLUMNS,
    STREAM_COLUMNS,
    stored_event,
    stream_events,
)
from eventsource.stores._stream_list import StreamListSql
from eventsource.stores.interface import (
    DEFAULT_BATCH_SIZE,
    Position,
    ReadOptions,
    StoredEvent,
    StreamInfo,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["PostgreSQLReads"]


class PostgreSQLReads:
    """Reads of `PostgreSQLEventStore` (a mixin)."""

    if TYPE_CHECKING:  # what the reads use of the store
        table: str
        _codec: EventCodec
        _feed: FeedSql
        _feed_key: int
        _bound: AsyncConnection | AsyncSession | None
        _version_sql: str
        _exists_sql: str
        _records_sql: str
        _current_sql: str
        _pending_sql: str
        _streams_sql: StreamListSql

        async def _fetch(self, what: str, sql: str, *args: Any) -> list[Sequence[Any]]: ...
        async def _own_fetch(self, what: str, sql: str, *args: Any) -> list[Sequence[Any]]: ...

    def _filters(self, options: ReadOptions, args: list[Any]) -> list[str]:
        clauses: list[str] = []

        def param(value: Any, cast: str) -> str:
            args.append(value)
            return f"${len(args)}::{cast}"

        if options.event_types is not None:
            clauses.append(f"event_type = ANY({param(sorted(options.event_types), 'text[]')})")
        if options.aggregate_type is not None:
            clauses.append(f"aggregate_type = {param(options.aggregate_type, 'text')}")
        if options.tenant_id is not None:
            clauses.append(f"tenant_id = {param(options.tenant_id, 'uuid')}")
        if options.partition is not None:
            partition, partitions = options.partition
            clauses.append(
                partition_clause(param(partitions, "bigint"), param(partition, "bigint"))
            )
        if options.from_timestamp is not None:
            clauses.append(f"occurred_at >= {param(options.from_timestamp, 'timestamptz')}")
        if options.to_timestamp is not None:
            clauses.append(f"occurred_at <= {param(options.to_timestamp, 'timestamptz')}")
        return clauses

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        codec = self._codec
        pages = self._stream_pages(aggregate_id, options or ReadOptions(), STREAM_COLUMNS)
        async for rows in pages:
            for row in rows:
                yield stored_event(codec, row, aggregate_id)

    async def read_stream_events(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[Iterable[DomainEvent]]:
        """A load's read: each page's events built straight from its rows as it is
        iterated."""
        codec = self._codec
        pages = self._stream_pages(aggregate_id, options or ReadOptions(), LOAD_COLUMNS)
        async for rows in pages:
            yield stream_events(codec, rows, aggregate_id)

    async def _stream_pages(
        self, aggregate_id: UUID, options: ReadOptions, columns: str
    ) -> AsyncIterator[Sequence[Sequence[Any]]]:
        """The rows of a stream read, a page at a time (cut to `options.limit`). Pages are
        version ranges: versions run 1, 2, 3, ... without gaps, so a range needs no sort and
        no LIMIT, and memory stays bounded by `batch_size`."""
        args: list[Any] = [aggregate_id, 0, 0]
        clauses = self._filters(options, args)
        # Filters that can thin a page out; a stream has one aggregate type, so filtering on
        # it keeps a stream whole or empties it, and short pages still mean "the end".
        filtered = len(clauses) > (options.aggregate_type is not None)
        order = "ASC" if options.forward else "DESC"
        sql = (
            f"SELECT {columns} FROM {self.table} WHERE aggregate_id = $1"
            f" AND aggregate_version BETWEEN $2 AND $3{''.join(' AND ' + c for c in clauses)}"
            f" ORDER BY aggregate_version {order}"
        )
        what = f"read stream {aggregate_id}"
        low = max(options.from_version, 1)
        high = options.to_version
        if filtered or not options.forward:
            last = await self.get_stream_version(aggregate_id)
            high = last if high is None else min(high, last)
        remaining = options.limit
        step = options.batch_size
        # The first page holds a typical stream whole, so a load is one round trip (a short
        # page means the end), unless the caller asked for smaller pages; later pages, of
        # huge streams only, have `batch_size` events.
        page = max(step, FIRST_STREAM_PAGE) if step >= DEFAULT_BATCH_SIZE else step
        if remaining is not None:
            page = max(1, min(page, remaining))
        if options.forward:
            cursor = low
        else:
            assert high is not None  # backward reads start from the stream's version
            cursor = high
        while remaining is None or remaining > 0:
            if options.forward:
                if high is not None and cursor > high:
                    return
                first = cursor
                last_in_page = cursor + page - 1 if high is None else min(cursor + page - 1, high)
                cursor = last_in_page + 1
                page = step
            else:
                if cursor < low:
                    return
                first, last_in_page = max(low, cursor - step + 1), cursor
                cursor = first - 1
            args[1], args[2] = first, last_in_page
            rows = await self._fetch(what, sql, *args)
            if remaining is not None:
                if len(rows) >= remaining:
                    yield rows[:remaining]
                    return
                remaining -= len(rows)
            if rows:
                yield rows
            if high is None and len(rows) < last_in_page - first + 1:
                return  # an unfiltered forward page came back short: the stream ends here

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        args: list[Any] = []
        clauses = self._filters(options, args)
        # One horizon per call, computed before the first page and reused by the others: the
        # pages are later statements, so they see everything committed below it.
        args.append((await self._horizon())[0])
        clauses.append(f"transaction_id < ${len(args)}::xid8")
        op, order = (">", "ASC") if options.forward else ("<", "DESC")
        n = len(args)
        head = f"SELECT {READ_COLUMNS} FROM {self.table} WHERE {' AND '.join(clauses)}"
        tail = f" ORDER BY transaction_id {order}, position {order} LIMIT "
        first_sql = f"{head}{tail}${n + 1}"
        next_sql = (
            f"{head} AND (transaction_id, position) {op} (${n + 1}::xid8, ${n + 2}::bigint)"
            f"{tail}${n + 3}"
        )
        after = options.after
        remaining = options.limit
        codec = self._codec
        while remaining is None or remaining > 0:
            page = options.batch_size if remaining is None else min(remaining, options.batch_size)
            if after is None:
                rows = await self._fetch("read the global feed", first_sql, *args, page)
            else:
                rows = await self._fetch(
                    "read the global feed", next_sql, *args, after.commit, after.sequence, page
                )
            # Each stored event is built as the reader consumes it (so it dies with its
            # decoded event once the reader moves on: a page of them alive at once would make
            # the garbage collector scan it over and over), and decodes its payload when its
            # `event` is first read (a reader that skips it by type never decodes it).
            for row in rows:
                yield stored_event(codec, row)
            if len(rows) < page:
                return
            after = Position(rows[-1][0], rows[-1][1])
            if remaining is not None:
                remaining -= len(rows)

    async def list_streams(
        self, *, aggregate_type: str | None = None, after: UUID | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """`StreamListing.list_streams`: a loose index scan over the stream/version index
        (`_stream_list`), about 2 x `limit` index probes whatever the table's size."""
        sql, args = self._streams_sql.statement(aggregate_type, after, limit)
        rows = await self._fetch("list streams", sql, *args)
        return [StreamInfo(UUID(int=row[0].int), row[1], int(row[2]), row[3]) for row in rows]

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        rows = await self._fetch(
            f"version of stream {aggregate_id}", self._version_sql, aggregate_id
        )
        return int(rows[0][0])

    async def event_exists(self, event_id: UUID) -> bool:
        rows = await self._fetch(f"look up event {event_id}", self._exists_sql, event_id)
        return bool(rows[0][0])

    async def get_event(self, event_id: UUID) -> StoredEvent:
        rows = await self._fetch(f"read event {event_id}", self._records_sql, [event_id])
        if not rows:
            raise EventNotFoundError(event_id)
        return stored_event(self._codec, rows[0])

    async def current_position(self) -> Position:
        """The last readable position of the global feed (`Position.START` when empty).

        A reader starting after it misses nothing: events of transactions still open when it
        was taken come later in the feed order.
        """
        horizon = (await self._horizon())[0]
        return await self._readable(horizon)

    async def _readable(self, horizon: int) -> Position:
        rows = await self._fetch("read the current position", self._current_sql, horizon)
        return Position(int(rows[0][0]), rows[0][1]) if rows else Position.START

    async def _horizon(self) -> tuple[int, int | None, timedelta | None]:
        """The feed's horizon (rows of transactions below it are all committed or gone), the
        pid of the writing transaction that holds it, and that transaction's age."""
        rows = await self._own_fetch(
            "compute the feed's horizon", self._feed.horizon, WRITER_CLASS, self._feed_key
        )
        horizon, pid, age = int(rows[0][0]), rows[0][1], rows[0][2]
        if self._bound is not None:
            cap = await self._fetch("read the transaction's snapshot", self._feed.snapshot_cap)
            if cap[0][0] is not None and int(cap[0][0]) < horizon:
                return int(cap[0][0]), None, None
        return horizon, pid, age

    async def horizon_lag(self) -> HorizonLag:
        """How far the readable end of the feed trails the committed events, and which
        transaction holds it back (see `HorizonLag`)."""
        horizon, pid, age = await self._horizon()
        readable = await self._readable(horizon)
        rows = await self._fetch("count the events behind the horizon", self._pending_sql, horizon)
        return HorizonLag(
            readable=readable if readable != Position.START else None,
            pending_events=int(rows[0][0]),
            oldest_transaction_age=age,
            blocking_pid=pid,
        )

    async def count_events(self, options: ReadOptions | None = None) -> int:
        """One `count(*)` over the rows `read_all(options)` would return now (same filters,
        same horizon), so lag reports never pull events into Python."""
        options = options or ReadOptions()
        args: list[Any] = []
        clauses = self._filters(options, args)
        args.append((await self._horizon())[0])
        clauses.append(f"transaction_id < ${len(args)}::xid8")
        if options.after is not None:
            args += [options.after.commit, options.after.sequence]
            op = ">" if options.forward else "<"
            clauses.append(
                f"(transaction_id, position) {op} (${len(args) - 1}::xid8, ${len(args)}::bigint)"
            )
        sql = f"SELECT 1 FROM {self.table} WHERE {' AND '.join(clauses)}"
        if options.limit is not None:
            args.append(options.limit)
            sql += f" LIMIT ${len(args)}"
        rows = await self._fetch(
            "count events of the feed", f"SELECT count(*) FROM ({sql}) s", *args
        )
        return int(rows[0][0])
