"""`PostgreSQLEventStore`: the production store, gap-free and close to the database's speed.

* SQLAlchemy (async, asyncpg driver) owns the engine, the pool and the caller's transactions;
  the store's own statements run on the asyncpg connection underneath a pooled SQLAlchemy
  connection, which costs nothing measurable over a bare asyncpg pool.
* An append is ONE statement: ``INSERT ... SELECT FROM unnest(...)`` of every event of the batch,
  guarded by the unique ``(aggregate_id, aggregate_version)`` constraint and, for an exact
  expected version, by the existence of that version. A statement is atomic on its own, so a
  lost connection never leaves half a batch. Appends are idempotent by event id.
* The global feed is ordered by ``(transaction_id, position)`` and only read below the oldest
  transaction still writing to the events table (the horizon, `_postgresql_feed`), so a reader
  that resumes from its last position never skips an event whose transaction committed late,
  and transactions that write no events never hold it back. An append never lands behind its
  stream's previous version in that order (`FeedOrderConflictError` otherwise).
* Rows are lean (migration 0008): the payload holds the event's own fields and the envelope
  lives in typed columns, read back without validating it again (`_postgresql_rows`,
  `EventCodec.decode_lean`); rows written before keep the complete event and read as before.
  A stream of up to 10,000 events loads in one statement.
* Reads and the store's own appends are retried after transient errors (a lost connection, a
  serialization failure, a deadlock) for up to `retry_timeout` seconds; a caller's transaction
  is never retried (it is gone: the error is raised).
* Wake-ups for readers stay off the commit path: the store's own appends do not NOTIFY (that
  would serialise their commits); once committed they ask a shared, coalescing notifier for
  one (`_postgresql_notify`). Appends in the caller's transaction NOTIFY in their statement,
  since only PostgreSQL sees that commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

from eventsource._internal import postgresql as pg
from eventsource._internal.optional import require
from eventsource._internal.sql import notify_channel, quote_identifier
from eventsource.events.base import DomainEvent
from eventsource.events.registry import EventRegistry
from eventsource.events.serialization import EventCodec
from eventsource.exceptions import (
    EventStoreError,
    FeedOrderConflictError,
    OptimisticLockError,
)
from eventsource.migrations import apply_postgresql_migrations, check_names
from eventsource.migrations.status import MigrationState, read_postgresql_status
from eventsource.stores._append import (
    attach_events,
    check_expected_version,
    expectation,
    replayed_result,
    validate_expected_version,
)
from eventsource.stores._postgresql_columns import AppendSql, append_arrays
from eventsource.stores._postgresql_feed import (
    LATE_CLASS,
    WRITER_CLASS,
    FeedSql,
    HorizonLag,
    lock_key,
)
from eventsource.stores._postgresql_notify import StoreWakeups
from eventsource.stores._postgresql_reads import PostgreSQLReads
from eventsource.stores._postgresql_rows import (
    READ_COLUMNS,
    record_of,
)
from eventsource.stores._stream_list import StreamListSql
from eventsource.stores.interface import (
    AppendResult,
    AppendSignal,
    EventStore,
    ExpectedVersion,
    Position,
)

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

__all__ = ["HorizonLag", "PostgreSQLEventStore"]

_MAX_RACE_ATTEMPTS = 100  # ANY / STREAM_EXISTS read the version again after a lost race
_T = TypeVar("_T")


class PostgreSQLEventStore(PostgreSQLReads, EventStore):
    """Event streams and a gap-free global feed in PostgreSQL (13+; asyncpg driver).

    Build it from a SQLAlchemy `AsyncEngine` (or an `async_sessionmaker`, whose engine is
    used), or with `PostgreSQLEventStore.from_url(...)`. `store.using(connection_or_session)`
    returns a store whose appends and reads join that transaction, so read-model or outbox rows
    commit atomically with the events. Create the tables with `await store.create_schema()`.

    Tables live in `schema`, their names start with `prefix`; both are quoted, never formatted
    raw into SQL. With `notify=True` each append signals the channel `store.channel`
    (LISTEN/NOTIFY) for subscriptions: after commit and coalesced with other appends of the
    process, or, in the caller's transaction (`using`), by a NOTIFY in that transaction.
    With `outbox=True` (the package guide spells it
    `outbox_enabled=True`) each append also queues its events
    in the outbox table of the same schema, in the same statement (see `OutboxRelay`).
    Reads and appends on the store's own connections are retried after a lost connection,
    serialization failure or deadlock for up to `retry_timeout` seconds (backoff with jitter;
    0 turns retries off); `transient_retries`, when given, also caps the number of retries.
    Retrying is safe: reads change nothing and appends are idempotent by event id. The store's own
    statements run on at most `max_connections` connections that it keeps checked out of the
    engine's pool (so size the pool for them plus your sessions). `enable_tracing=False`
    leaves this store's appends out of OpenTelemetry spans and metrics.

    Rows are written in the lean form (the payload holds the event's own fields, the envelope
    has columns; see docs/postgresql.md). `lean_payloads=False` writes the complete event in
    the payload instead, as releases before migration 0008 did: for the writers of a rolling
    deploy while readers of an older release still run (they would misread lean rows). This
    release reads both forms whatever the setting.
    """

    backend = "postgresql"
    filters_partitions = True

    def __init__(
        self,
        engine: AsyncEngine | Any,
        *,
        registry: EventRegistry | None = None,
        schema: str = "public",
        prefix: str = "",
        notify: bool = True,
        outbox: bool = False,
        transient_retries: int | None = None,
        retry_timeout: float = 5.0,
        max_connections: int = 10,
        outbox_enabled: bool | None = None,
        enable_tracing: bool = True,
        lean_payloads: bool = True,
        _bound: AsyncConnection | AsyncSession | None = None,
        _owns_engine: bool = False,
        _connections: pg.ConnectionCache | None = None,
    ) -> None:
        require("asyncpg", extra="postgresql", feature="PostgreSQLEventStore")
        self.engine: AsyncEngine = pg.engine_of(engine)
        if self.engine.dialect.driver != "asyncpg":
            raise ValueError(
                "PostgreSQLEventStore needs an engine on the asyncpg driver "
                f"(postgresql+asyncpg://), not {self.engine.dialect.name}+"
                f"{self.engine.dialect.driver}"
            )
        if transient_retries is not None and transient_retries < 0:
            raise ValueError(f"transient_retries must be >= 0 or None, got {transient_retries}")
        if not retry_timeout >= 0:
            raise ValueError(f"retry_timeout must be >= 0 seconds, got {retry_timeout}")
        check_names(schema, prefix)
        self.registry = registry
        self.schema = schema
        self.prefix = prefix
        self.notify = notify
        self.outbox = outbox if outbox_enabled is None else outbox_enabled
        self.enable_tracing = enable_tracing
        self.lean_payloads = lean_payloads
        self.retry_timeout = retry_timeout
        self.max_connections = max_connections
        self.transient_retries = transient_retries
        self.channel = notify_channel(schema, prefix)
        self._codec = EventCodec(registry)
        self._bound = _bound
        self._owns_engine = _owns_engine
        # A bound store shares its parent's connections (for the horizon and late checks).
        self._connections = _connections or pg.ConnectionCache(self.engine, max_connections)
        self.table = f"{quote_identifier(schema)}.{quote_identifier(prefix + 'events')}"
        self._feed_key = lock_key(f"{schema}\x00{prefix}events")
        self._feed = FeedSql(self.table, self._feed_key)
        self._constraint_event_id = prefix + "events_event_id_key"
        self._wakeups = StoreWakeups(self.engine, self.channel, f"PostgreSQL store {self.table}")
        self._build_sql()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        registry: EventRegistry | None = None,
        schema: str = "public",
        prefix: str = "",
        notify: bool = True,
        outbox: bool = False,
        transient_retries: int | None = None,
        retry_timeout: float = 5.0,
        max_connections: int = 10,
        lean_payloads: bool = True,
        **engine_kwargs: Any,
    ) -> Self:
        """A store with its own engine (disposed of by `close()`); `engine_kwargs` go to
        `create_async_engine` (its pool_size defaults to `max_connections`, max_overflow to
        10 for the sessions of `using`)."""
        require("asyncpg", extra="postgresql", feature="PostgreSQLEventStore")
        engine_kwargs.setdefault("pool_size", max_connections)
        return cls(
            pg.create_engine(url, **engine_kwargs),
            registry=registry,
            schema=schema,
            prefix=prefix,
            notify=notify,
            outbox=outbox,
            transient_retries=transient_retries,
            retry_timeout=retry_timeout,
            max_connections=max_connections,
            lean_payloads=lean_payloads,
            _owns_engine=True,
        )

    def using(self, connection: AsyncConnection | AsyncSession) -> PostgreSQLEventStore:
        """This store inside the caller's transaction (a SQLAlchemy connection or session).

        Appends run in a savepoint of that transaction, so a conflict raises
        `OptimisticLockError` and leaves the caller's transaction usable. Nothing is visible
        to others until the caller commits. The returned store does not own the connection.
        Nothing in the caller's transaction is retried: a lost connection or a
        `FeedOrderConflictError` means retrying the whole transaction. The feed's horizon and
        the late-writer check run on the parent store's own connections.
        """
        return type(self)(
            self.engine,
            registry=self.registry,
            schema=self.schema,
            prefix=self.prefix,
            notify=self.notify,
            outbox=self.outbox,
            transient_retries=0,
            retry_timeout=self.retry_timeout,
            max_connections=self.max_connections,
            enable_tracing=self.enable_tracing,
            lean_payloads=self.lean_payloads,
            _bound=connection,
            _connections=self._connections,
        )

    def _build_sql(self) -> None:
        t = self.table
        # NOTIFY in the statement only in the caller's transaction, whose commit we do not
        # see; the store's own appends are announced after commit (`_postgresql_notify`): a
        # NOTIFY in the statement would serialise the commits of every appending transaction.
        # Rows are lean: the payload holds the event's own fields, the envelope has columns.
        self._appends = AppendSql(
            t,
            lean=self.lean_payloads,
            notify_in_statement=self.notify and self._bound is not None,
            outbox_cte=self._outbox_cte(),
        )
        self._streams_sql = StreamListSql(t, lambda n, kind: f"${n}::{kind}")
        self._version_sql = (
            f"SELECT COALESCE(MAX(aggregate_version), 0) FROM {t} WHERE aggregate_id = $1"
        )
        self._exists_sql = f"SELECT EXISTS (SELECT 1 FROM {t} WHERE event_id = $1)"
        self._records_sql = f"SELECT {READ_COLUMNS} FROM {t} WHERE event_id = ANY($1::uuid[])"
        self._current_sql = (
            f"SELECT transaction_id, position FROM {t} WHERE transaction_id < $1::xid8"
            " ORDER BY transaction_id DESC, position DESC LIMIT 1"
        )
        self._pending_sql = f"SELECT count(*) FROM {t} WHERE transaction_id >= $1::xid8"
        self._order_sql = (
            f"SELECT transaction_id > pg_current_xact_id_if_assigned() FROM {t}"
            " WHERE aggregate_id = $1 AND aggregate_version = $2::bigint"
        )

    def _outbox_cte(self) -> str:
        """With `outbox=True`, the append statement also queues its events in the outbox
        table: same statement, same transaction, no extra round trip."""
        if not self.outbox:
            return ""
        outbox = f"{quote_identifier(self.schema)}.{quote_identifier(self.prefix + 'outbox')}"
        # The outbox keeps the complete event (what the relay publishes): the envelope
        # columns put back into the JSON, in the statement.
        complete = (
            "(jsonb_build_object('event_id', event_id, 'event_type', event_type,"
            " 'event_version', event_version, 'occurred_at', occurred_at, 'aggregate_id', $1,"
            " 'aggregate_type', $2, 'aggregate_version', aggregate_version, 'tenant_id',"
            " tenant_id, 'correlation_id', correlation_id, 'causation_id', causation_id,"
            " 'metadata', COALESCE(metadata, '{}'::jsonb)) || payload)::text"
        )
        return (
            f", outboxed AS (INSERT INTO {outbox} (event_id, event_type, event_version,"
            f" aggregate_id, aggregate_type, aggregate_version, payload)"
            f" SELECT event_id, event_type, event_version, $1, $2, aggregate_version,"
            f" {complete} FROM appended ORDER BY position)"
        )

    # -- connections -------------------------------------------------------------------------

    def _driver(self, what: str) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """One of the store's own asyncpg connections, in autocommit mode; errors typed."""
        return self._connections.checkout(f"PostgreSQL store {self.table}: {what}")

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """`call()`, retried after transient errors within the store's budget. Only for calls
        that are safe to repeat and do not run in the caller's transaction."""
        return await pg.retry_transient(
            call, budget=self.retry_timeout, max_retries=self.transient_retries
        )

    async def _own_fetch(self, what: str, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Run one read-only statement on a connection of the store's own (retried)."""
        where = f"PostgreSQL store {self.table}: {what}"
        return await self._retrying(lambda: self._connections.fetch(where, sql, *args))

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[Sequence[Any]]:
        """Run one read-only statement (own connection, retried, or the bound transaction)
        and return its rows."""
        if self._bound is None:
            return await self._own_fetch(what, sql, *args)
        return await pg.fetch_in(self._bound, f"PostgreSQL store {self.table}: {what}", sql, *args)

    async def create_schema(self, *, allow_newer: bool = False) -> list[int]:
        """Create or upgrade the tables: apply every migration not applied yet.

        Safe to run concurrently from several processes (an advisory lock serializes them) and
        idempotent. Returns the versions applied by this call. A migration file that changed
        after it was applied raises `StoreSchemaError` (migrations are append-only), and so does
        a database migrated by a newer release, unless `allow_newer` (for the old processes of a
        rolling deploy) turns that into a logged `RuntimeWarning`.
        """
        async with self._driver("create_schema") as conn:
            return await apply_postgresql_migrations(
                conn, schema=self.schema, prefix=self.prefix, allow_newer=allow_newer
            )

    async def migration_status(self) -> list[MigrationState]:
        """Which migrations the store's schema has applied, which are pending, and any
        changed since or recorded by a newer release (read only: nothing is created)."""
        async with self._driver("read the migration status") as conn:
            return await read_postgresql_status(conn, schema=self.schema, prefix=self.prefix)

    async def close(self) -> None:
        """Return the store's connections to the engine's pool, send a pending wake-up, and
        dispose of the engine if `from_url` created it (a shared engine is left open). A
        store from `using` owns nothing: closing it leaves its parent's connections alone."""
        if self._bound is not None:
            return
        await self._connections.close()
        await self._wakeups.close()  # flushes a pending wake-up (the pool may need the above)
        if self._owns_engine:
            await self.engine.dispose()

    # -- append ------------------------------------------------------------------------------

    async def _append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        validate_expected_version(expected_version)
        if not events:  # nothing to store: only the expectation is checked
            current = await self.get_stream_version(aggregate_id)
            check_expected_version(aggregate_id, expected_version, current)
            return AppendResult(aggregate_id, current, (), ())
        if self._bound is not None:  # the caller's transaction: its owner retries it
            return await self._append(aggregate_id, aggregate_type, events, expected_version)
        result = await self._retrying(
            lambda: self._append(aggregate_id, aggregate_type, events, expected_version)
        )
        if self.notify:  # committed: wake readers, off the append's path
            self._wakeups.appended(aggregate_type)
        return result

    async def _append(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        what = f"append to stream {aggregate_id}"
        if self._bound is not None:
            await self._enter_feed(aggregate_id)
        for _ in range(_MAX_RACE_ATTEMPTS):
            if expected_version >= 0:
                base = expected_version
            elif expected_version == ExpectedVersion.NO_STREAM:
                base = 0
            else:  # ANY, STREAM_EXISTS: append after whatever the stream holds now
                base = await self.get_stream_version(aggregate_id)
            if base == 0 and expected_version == ExpectedVersion.STREAM_EXISTS:
                result = await self._conflict(
                    aggregate_id, aggregate_type, events, expected_version, base
                )
                if result is None:
                    continue
                return result
            attached = attach_events(events, aggregate_id, aggregate_type, base + 1)
            sql, args = self._appends.call(
                aggregate_id,
                aggregate_type,
                base,
                append_arrays(attached, lean=self.lean_payloads),
                self.channel,
                (WRITER_CLASS, self._feed_key),
            )
            try:
                rows = await self._insert(what, sql, args)
            except _UniqueViolation:
                rows = []
            if rows:
                return AppendResult(
                    aggregate_id=aggregate_id,
                    new_version=base + len(attached),
                    events=tuple(attached),
                    positions=tuple(Position(int(r[0]), r[1]) for r in rows),
                )
            result = await self._conflict(
                aggregate_id, aggregate_type, events, expected_version, base
            )
            if result is not None:
                return result
        current = await self.get_stream_version(aggregate_id)
        raise OptimisticLockError(aggregate_id, expectation(expected_version), current)

    async def take_writer_lock(self) -> None:
        """Enter the feed as a writer now, in your transaction (a store from `using`).

        Call it first thing in a unit of work that writes other rows before it appends: the
        transaction then holds the feed's writer lock from before it got its id, so its appends
        are never *late* and never refused with `FeedOrderConflictError` for that reason (see
        docs/postgresql.md, "Every stream in version order"). Idempotent within a transaction;
        called after the transaction wrote something, it runs the late-writer check at once.
        """
        if self._bound is None:
            raise ValueError(
                "take_writer_lock() is for your transaction: "
                "await store.using(connection).take_writer_lock()"
            )
        await self._enter_feed(None)

    async def _enter_feed(self, aggregate_id: UUID | None) -> None:
        """Before appending in the caller's transaction: take the writer lock, and when the
        transaction got its id before holding it (late), refuse if a reader may already have
        passed that id (see `_postgresql_feed`)."""
        rows = await self._fetch(
            "take the feed's writer lock",
            self._feed.enter,
            WRITER_CLASS,
            LATE_CLASS,
            self._feed_key,
        )
        xid, pid, late = rows[0][0], rows[0][1], rows[0][2]
        if not late:
            return
        # On a connection of our own: a snapshot taken now, after the locks, whatever the
        # isolation level of the caller's transaction.
        younger, other_late = (
            await self._own_fetch(
                "check a late writer",
                self._feed.late_check,
                LATE_CLASS,
                self._feed_key,
                int(xid),
                int(pid),
            )
        )[0]
        if younger:
            raise FeedOrderConflictError(
                aggregate_id,
                f"the transaction got its id ({int(xid)}) before it appended, and a younger "
                "transaction has committed events since",
            )
        if other_late:
            raise FeedOrderConflictError(
                aggregate_id,
                f"the transaction got its id ({int(xid)}) before it appended, while another "
                "such transaction is appending",
            )

    async def _insert(self, what: str, sql: str, args: tuple[Any, ...]) -> list[Sequence[Any]]:
        if self._bound is None:
            try:
                return await self._connections.fetch(
                    f"PostgreSQL store {self.table}: {what}", sql, *args
                )
            except EventStoreError as exc:
                constraint = pg.unique_violation(exc.__cause__ or exc)
                if constraint is not None:
                    raise _UniqueViolation(constraint) from exc
                raise
        savepoint = self._bound.begin_nested()
        try:
            async with savepoint:
                return await self._fetch(what, sql, *args)
        except EventStoreError as exc:
            constraint = pg.unique_violation(exc.__cause__ or exc)
            if constraint is not None:
                raise _UniqueViolation(constraint) from exc
            raise

    async def _conflict(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: list[DomainEvent],
        expected_version: int,
        base: int,
    ) -> AppendResult | None:
        """After an insert that stored nothing: the original result of an idempotent retry,
        or `OptimisticLockError`, or `FeedOrderConflictError` (the caller's transaction is
        older than the one that wrote version `base`), or None when the expectation holds now
        and the insert should be tried again (ANY / STREAM_EXISTS lost a race, or the stream
        reached the expected version between the caller's read and the insert)."""
        rows = await self._fetch(
            "look up event ids", self._records_sql, [e.event_id for e in events]
        )
        if rows:
            return replayed_result(
                events, aggregate_id, aggregate_type, [record_of(self._codec, r) for r in rows]
            )
        current = await self.get_stream_version(aggregate_id)
        check_expected_version(aggregate_id, expected_version, current)
        if self._bound is not None and base > 0 and current == base:
            newer = await self._fetch("check the feed order", self._order_sql, aggregate_id, base)
            if newer and newer[0][0]:
                raise FeedOrderConflictError(
                    aggregate_id,
                    f"version {base} was written by a younger transaction than this one",
                )
        return None

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[AppendSignal]:
        """Receive a signal for every committed append (needs `notify=True` on the writers).

        Appends of this process's stores on the same engine signal at once; other appends
        through their (coalesced) NOTIFY. Holds one pooled connection for the duration of the
        block. A listening session that dies (terminated, server restart, half-open
        connection) is detected and replaced, and the signal fires once after each
        reconnection (see `_internal/postgresql_listen`).
        """
        async with self._wakeups.listen() as signal:
            yield signal


class _UniqueViolation(Exception):
    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint
