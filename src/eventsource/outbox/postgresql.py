"""`PostgreSQLOutboxRepository` and `PostgreSQLInboxRepository`: the outbox and inbox tables
beside the events (migration 0004; `create_schema()` on any PostgreSQL component makes them).

Relays lease rows (migration 0006): one statement picks due rows with `FOR UPDATE SKIP
LOCKED`, stamps them with the relay's token (`claimed_by`) and `claimed_until`, and commits
at once; the relay publishes outside any transaction (an open transaction holding a
transaction id would hold back every reader of the global feed) and another short statement
marks the rows, only where the token is still its own. A relay that dies leaves its lease to
expire (`lease_seconds`), then the rows are claimed again.

Order per aggregate: a row is not claimable while an earlier unpublished row of its
aggregate is leased, delayed or parked. Two claims running at once cannot see each other's
uncommitted leases, so a claim also leases only the rows whose earlier unpublished rows
(as its snapshot shows them) it locked too; the others stay free for later. An earlier row
the snapshot shows unpublished but another relay holds is not among its locked rows, so the
later row waits; an earlier row locked here is held by nobody else.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self
from uuid import UUID, uuid4

from eventsource._internal import postgresql as pg
from eventsource._internal.pg_table import PostgreSQLTable
from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import EventSourceError
from eventsource.outbox.interface import (
    InboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRepository,
    OutboxStats,
    RecordedBatch,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

__all__ = ["PostgreSQLInboxRepository", "PostgreSQLOutboxRepository"]

_ENTRY_COLUMNS = (
    "id, event_id, event_type, event_version, aggregate_id, aggregate_type, aggregate_version,"
    " payload, created_at, attempts, last_error, parked_at"
)


def _entry(row: Sequence[Any]) -> OutboxEntry:
    return OutboxEntry(
        id=row[0],
        event_id=UUID(str(row[1])),
        event_type=row[2],
        event_version=row[3],
        aggregate_id=UUID(str(row[4])),
        aggregate_type=row[5],
        aggregate_version=row[6],
        payload=row[7],
        created_at=row[8],
        attempts=row[9],
        last_error=row[10],
        parked_at=row[11],
    )


def _lease(seconds: float) -> timedelta:
    if seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, not {seconds}")
    return timedelta(seconds=seconds)


class PostgreSQLOutboxRepository(PostgreSQLTable, OutboxRepository):
    """The outbox in `{schema}.{prefix}outbox`; a `PostgreSQLEventStore(outbox=True)` with the
    same schema and prefix fills it (`PostgreSQLOutboxRepository.for_store(store)`).

    `lease_seconds` is how long a claimed batch may take to publish before another relay may
    claim its rows again (publishing them twice); keep it well above a publish's worst case.
    """

    TABLE = "outbox"

    def __init__(
        self, engine: AsyncEngine | Any, *, lease_seconds: float = 60.0, **kwargs: Any
    ) -> None:
        super().__init__(engine, **kwargs)
        self.lease = _lease(lease_seconds)
        """How long a claimed batch may take before another relay may claim its rows again;
        keep it well above a publish's worst case."""
        t = self.table
        self._add_sql = (
            f"INSERT INTO {t} (event_id, event_type, event_version, aggregate_id,"
            " aggregate_type, aggregate_version, payload)"
            " SELECT a, b, c, d, e, f, g FROM unnest($1::uuid[], $2::text[], $3::int[],"
            " $4::uuid[], $5::text[], $6::bigint[], $7::text[]) WITH ORDINALITY"
            " AS u(a, b, c, d, e, f, g, n) ORDER BY n"
        )
        # Both order checks run per row on the (aggregate_id, id) index of unpublished rows
        # (`OFFSET 0` keeps PostgreSQL from turning the first into a join over every pending
        # row; the second is a scalar subquery), and the candidates are read in id order up
        # to the limit: a claim costs what its batch costs, however long the backlog.
        self._claim_sql = (
            f"WITH c AS (SELECT o.id, o.aggregate_id FROM {t} o"
            " WHERE o.published_at IS NULL AND o.parked_at IS NULL AND o.next_attempt_at <= now()"
            " AND (o.claimed_until IS NULL OR o.claimed_until < now())"
            f" AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.aggregate_id = o.aggregate_id"
            " AND p.published_at IS NULL AND p.id < o.id AND (p.parked_at IS NOT NULL"
            " OR p.next_attempt_at > now() OR p.claimed_until >= now()) OFFSET 0)"
            " ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED)"
            f" UPDATE {t} u SET claimed_by = $2, claimed_until = now() + $3::interval"
            f" FROM c WHERE u.id = c.id AND (SELECT count(*) FROM {t} p"
            " WHERE p.aggregate_id = c.aggregate_id AND p.published_at IS NULL AND p.id < c.id)"
            " = (SELECT count(*) FROM c e WHERE e.aggregate_id = c.aggregate_id AND e.id < c.id)"
            f" RETURNING {', '.join('u.' + c.strip() for c in _ENTRY_COLUMNS.split(','))}"
        )
        mine = " WHERE id = ANY($1::bigint[]) AND claimed_by = $2"
        unlease = "claimed_by = NULL, claimed_until = NULL"
        self._published_sql = f"UPDATE {t} SET published_at = now(), {unlease}{mine}"
        self._failed_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = $3, next_attempt_at = $4,"
            f" {unlease}{mine}"
        )
        self._parked_sql = (
            f"UPDATE {t} SET attempts = attempts + 1, last_error = $3, parked_at = now(),"
            f" {unlease}{mine}"
        )
        self._release_sql = f"UPDATE {t} SET {unlease}{mine}"
        self._add_one_sql = (
            f"INSERT INTO {t} (event_id, event_type, event_version, aggregate_id,"
            " aggregate_type, aggregate_version, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " RETURNING id"
        )
        self._mark_published_sql = (
            f"UPDATE {t} SET published_at = now(), {unlease}"
            " WHERE id = $1 AND published_at IS NULL RETURNING 1"
        )
        self._cleanup_sql = f"DELETE FROM {t} WHERE published_at < now() - $1::interval"
        unparked = "published_at IS NULL AND parked_at IS NULL"
        leased = "published_at IS NULL AND claimed_until > now()"
        self._stats_sql = (
            f"SELECT count(*) FILTER (WHERE {unparked}),"
            f" count(*) FILTER (WHERE {unparked} AND attempts > 0),"
            " count(*) FILTER (WHERE published_at IS NOT NULL),"
            f" min(created_at) FILTER (WHERE {unparked}),"
            f" count(*) FILTER (WHERE parked_at IS NOT NULL AND published_at IS NULL),"
            f" count(*) FILTER (WHERE {leased}),"
            f" count(DISTINCT claimed_by) FILTER (WHERE {leased}) FROM {t}"
        )
        parked = "parked_at IS NOT NULL AND published_at IS NULL"
        self._list_parked_sql = (
            f"SELECT {_ENTRY_COLUMNS} FROM {t} WHERE {parked} ORDER BY id LIMIT $1"
        )
        self._retry_parked_sql = (
            f"UPDATE {t} SET parked_at = NULL, attempts = 0, next_attempt_at = now()"
            f" WHERE id = $1 AND {parked} RETURNING 1"
        )
        self._discard_parked_sql = f"DELETE FROM {t} WHERE id = $1 AND {parked} RETURNING 1"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str = "public",
        prefix: str = "",
        lease_seconds: float = 60.0,
        **engine_kwargs: Any,
    ) -> Self:
        """An outbox with its own engine, disposed of by `close()`."""
        outbox = super().from_url(url, schema=schema, prefix=prefix, **engine_kwargs)
        outbox.lease = _lease(lease_seconds)
        return outbox

    @classmethod
    def for_store(cls, store: Any, *, lease_seconds: float = 60.0) -> Self:
        """The outbox a `PostgreSQLEventStore(outbox=True)` fills (same engine, schema, prefix)."""
        return cls(
            store.engine, schema=store.schema, prefix=store.prefix, lease_seconds=lease_seconds
        )

    async def add(self, events: Sequence[DomainEvent]) -> None:
        if not events:
            return
        async with self._driver("add events") as conn:
            await conn.execute(
                self._add_sql,
                [e.event_id for e in events],
                [e.event_type for e in events],
                [e.event_version for e in events],
                [e.aggregate_id for e in events],
                [e.aggregate_type for e in events],
                [e.aggregate_version for e in events],
                [EventCodec.encode(e) for e in events],
            )

    async def add_event(self, event: DomainEvent) -> int:
        async with self._driver("add an event") as conn:
            entry_id: int = await conn.fetchval(
                self._add_one_sql,
                event.event_id,
                event.event_type,
                event.event_version,
                event.aggregate_id,
                event.aggregate_type,
                event.aggregate_version,
                EventCodec.encode(event),
            )
        return entry_id

    async def mark_published(self, entry_id: int) -> bool:
        async with self._driver("mark a row published") as conn:
            return await conn.fetchval(self._mark_published_sql, entry_id) is not None

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        token = uuid4()
        async with self._driver("claim outbox rows") as conn, conn.transaction():
            # A lease lost in a server crash only lets another relay publish the rows again
            # (at least once, as ever), so its commit need not wait for the disk.
            await conn.execute("SET LOCAL synchronous_commit = off")
            rows = await conn.fetch(self._claim_sql, limit, token, self.lease)
        entries = sorted((_entry(row) for row in rows), key=lambda entry: entry.id)
        batch = RecordedBatch(entries)
        if not entries:
            yield batch
            return
        ids = [entry.id for entry in entries]
        try:
            yield batch
        except BaseException:
            # Free the rows now rather than when the lease expires; if the database is
            # unreachable too, the lease expiring frees them.
            with contextlib.suppress(EventSourceError, OSError):
                async with self._driver("release outbox rows") as conn:
                    await conn.execute(self._release_sql, ids, token)
            raise
        marked = set(batch.published_ids)
        if len(marked) == len(ids) and not batch.failures and not batch.parks:  # one statement
            async with self._driver("mark outbox rows") as conn:
                await conn.execute(self._published_sql, batch.published_ids, token)
            return
        async with self._driver("mark outbox rows") as conn, conn.transaction():
            if batch.published_ids:
                await conn.execute(self._published_sql, batch.published_ids, token)
            for failed_ids, error, retry_at in batch.failures:
                marked.update(failed_ids)
                await conn.execute(self._failed_sql, failed_ids, token, error, retry_at)
            for parked_ids, error in batch.parks:
                marked.update(parked_ids)
                await conn.execute(self._parked_sql, parked_ids, token, error)
            rest = [entry_id for entry_id in ids if entry_id not in marked]
            if rest:
                await conn.execute(self._release_sql, rest, token)

    async def cleanup(self, older_than: timedelta) -> int:
        async with self._driver("clean up") as conn:
            status = await conn.execute(self._cleanup_sql, older_than)
        return int(status.rsplit(" ", 1)[-1])

    async def stats(self) -> OutboxStats:
        async with self._driver("stats") as conn:
            row = await conn.fetchrow(self._stats_sql)
        return OutboxStats(
            pending=row[0],
            failing=row[1],
            published=row[2],
            oldest_pending=row[3],
            parked=row[4],
            leased=row[5],
            relays=row[6],
        )

    async def list_parked(self, limit: int = 100) -> list[OutboxEntry]:
        async with self._driver("list parked rows") as conn:
            return [_entry(row) for row in await conn.fetch(self._list_parked_sql, limit)]

    async def retry_parked(self, entry_id: int) -> bool:
        async with self._driver("retry a parked row") as conn:
            return await conn.fetchval(self._retry_parked_sql, entry_id) is not None

    async def discard_parked(self, entry_id: int) -> bool:
        async with self._driver("discard a parked row") as conn:
            return await conn.fetchval(self._discard_parked_sql, entry_id) is not None


class PostgreSQLInboxRepository(PostgreSQLTable, InboxRepository):
    """The inbox in `{schema}.{prefix}inbox`.

    `inbox.using(connection)` records inside the caller's transaction: ``if await
    inbox.using(conn).record("billing", event.event_id): ...write the effect...`` commits the
    effect and the record together, or neither: the effect happens exactly once.
    """

    TABLE = "inbox"

    def __init__(
        self,
        engine: AsyncEngine | Any,
        *,
        _bound: AsyncConnection | AsyncSession | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(engine, **kwargs)
        self._bound = _bound
        t = self.table
        self._contains_sql = (
            f"SELECT EXISTS (SELECT 1 FROM {t} WHERE consumer = $1 AND event_id = $2)"
        )
        self._record_sql = (
            f"INSERT INTO {t} (consumer, event_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING 1"
        )
        self._cleanup_sql = (
            f"WITH gone AS (DELETE FROM {t} WHERE processed_at < now() - $1::interval"
            " RETURNING 1) SELECT count(*) FROM gone"
        )

    def using(self, connection: AsyncConnection | AsyncSession) -> PostgreSQLInboxRepository:
        """This inbox inside the caller's transaction (a SQLAlchemy connection or session)."""
        return type(self)(self.engine, schema=self.schema, prefix=self.prefix, _bound=connection)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Sequence[Any]]:
        if self._bound is None:
            async with self._driver(what) as conn:
                return list(await conn.fetch(sql, *args))
        return await pg.fetch_in(self._bound, f"PostgreSQL {self.table}: {what}", sql, *args)

    async def contains(self, consumer: str, event_id: UUID) -> bool:
        rows = await self._fetch("look up", self._contains_sql, consumer, event_id)
        return bool(rows[0][0])

    async def record(self, consumer: str, event_id: UUID) -> bool:
        return bool(await self._fetch("record", self._record_sql, consumer, event_id))

    async def cleanup(self, older_than: timedelta) -> int:
        rows = await self._fetch("clean up", self._cleanup_sql, older_than)
        return int(rows[0][0])
