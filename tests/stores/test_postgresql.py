"""PostgreSQLEventStore against the real PostgreSQL: the contract, then what only it promises.

Every test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from eventsource import (
    EventRegistry,
    EventStore,
    ExpectedVersion,
    OptimisticLockError,
    Position,
    ReadOptions,
)
from eventsource.exceptions import (
    StoreConnectionError,
    StoreSchemaError,
    TransientStoreError,
)
from eventsource.migrations import load_migrations
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing import EventStoreContract, StreamListingContract
from eventsource.testing.events import CartCheckedOut, ItemAdded, contract_registry

pytestmark = pytest.mark.postgresql


class TestPostgreSQLEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self, registry: EventRegistry) -> EventStore:
        store = PostgreSQLEventStore.from_url(self.url, schema=self.schema, registry=registry)
        await store.create_schema()
        return store


class TestQuotedNames(EventStoreContract):
    """Schema and prefix that need quoting: names are never formatted raw into SQL."""

    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self, registry: EventRegistry) -> EventStore:
        store = PostgreSQLEventStore.from_url(
            self.url, schema=self.schema, prefix='Odd "name"; -- ', registry=registry
        )
        await store.create_schema()
        return store


class TestPostgreSQLStreamListing(StreamListingContract):
    """With a prefix that needs quoting: the listing's statement quotes the table too."""

    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self, registry: EventRegistry) -> EventStore:
        store = PostgreSQLEventStore.from_url(
            self.url, schema=self.schema, prefix='Odd "name" ', registry=registry
        )
        await store.create_schema()
        return store


def _items(count: int, tag: str) -> list[ItemAdded]:
    return [ItemAdded(name=f"{tag}-{n}", quantity=n) for n in range(1, count + 1)]


# -- the gap-free global feed ----------------------------------------------------------------


async def _naive_read(
    conn: asyncpg.Connection, table: str, after: int, xmin: int
) -> list[tuple[int, UUID]]:
    """What a reader ordering by position alone (with an xmin guard) would return. The guard
    `xmin` is the oldest transaction of this test still open: the cluster-wide
    `pg_snapshot_xmin` would also wait for unrelated sessions, which a shared server has."""
    rows = await conn.fetch(
        f"SELECT position, event_id FROM {table} WHERE position > $1"
        " AND transaction_id < $2::text::xid8 ORDER BY position",
        after,
        str(xmin),
    )
    return [(r[0], r[1]) for r in rows]


async def test_late_commit_of_a_younger_transaction_is_not_skipped(
    store: PostgreSQLEventStore, engine: AsyncEngine, postgres_url: str
) -> None:
    """The interleaving that makes a position-ordered reader lose an event, step by step.

    T1 takes a transaction id and writes position 1; T2 (younger) writes position 2; T1 writes
    position 3 and commits while T2 stays open. A reader then sees T1's events (1 and 3), and
    when T2 commits, position 2 lies behind the naive reader's checkpoint: lost. Our feed orders
    by (transaction id, position), so T2's event comes after (T1, 3).
    """
    async with engine.connect() as c1, engine.connect() as c2:
        t1, t2 = await c1.begin(), await c2.begin()
        first = await store.using(c1).append_events(uuid4(), "Cart", _items(1, "t1a"), 0)
        second = await store.using(c2).append_events(uuid4(), "Cart", _items(1, "t2"), 0)
        t2_xid = int(second.positions[0].commit)
        third = await store.using(c1).append_events(uuid4(), "Cart", _items(1, "t1b"), 0)
        assert first.positions[0].sequence < second.positions[0].sequence
        assert second.positions[0].sequence < third.positions[0].sequence
        await t1.commit()

        ours = [s async for s in store.read_all()]
        naive_conn = await asyncpg.connect(postgres_url)
        try:
            naive = await _naive_read(naive_conn, store.table, 0, t2_xid)
            assert [p for p, _ in naive] == [
                first.positions[0].sequence,
                third.positions[0].sequence,
            ]
            assert [s.position for s in ours] == [first.positions[0], third.positions[0]]

            await t2.commit()
            now = int(await naive_conn.fetchval("SELECT pg_current_xact_id()::text"))
            naive_after = await _naive_read(naive_conn, store.table, naive[-1][0], now)
            ours_after = [s async for s in store.read_all(ReadOptions(after=ours[-1].position))]
        finally:
            await naive_conn.close()
    assert naive_after == [], "the naive reader skipped T2's event: the failure we guard against"
    assert [s.event_id for s in ours_after] == [second.events[0].event_id]
    assert ours_after[0].position > ours[-1].position


async def test_resuming_reader_sees_every_event_exactly_once_under_delayed_commits(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """Many writers, multi-event and multi-statement transactions, random commit delays; a
    reader resuming from its last position must collect every committed event once, in
    increasing position order."""
    writers, transactions_per_writer = 16, 8
    expected: set[UUID] = set()
    done = asyncio.Event()
    rng = random.Random(20261125)

    async def writer(n: int) -> None:
        for t in range(transactions_per_writer):
            async with engine.connect() as conn:
                tx = await conn.begin()
                bound = store.using(conn)
                ids: list[UUID] = []
                for part in range(rng.randint(1, 3)):  # several statements per transaction
                    batch = _items(rng.randint(1, 4), f"w{n}t{t}p{part}")
                    await bound.append_events(uuid4(), "Cart", batch, ExpectedVersion.NO_STREAM)
                    ids += [e.event_id for e in batch]
                    await asyncio.sleep(rng.uniform(0, 0.01))
                await conn.execute(text("SELECT pg_sleep(:s)"), {"s": rng.uniform(0, 0.05)})
                if rng.random() < 0.15:
                    await tx.rollback()  # aborted transactions must never show up
                else:
                    await tx.commit()
                    expected.update(ids)

    async def reader() -> list[Position]:
        seen: list[Position] = []
        after: Position | None = None
        while True:
            finished = done.is_set()
            async for stored in store.read_all(ReadOptions(after=after, batch_size=7)):
                seen.append(stored.position)
                ids_seen.append(stored.event_id)
                after = stored.position
            if finished:
                return seen
            await asyncio.sleep(0.002)

    ids_seen: list[UUID] = []
    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(writers)))
    done.set()
    positions = await reading
    assert len(ids_seen) == len(set(ids_seen)), "an event was delivered twice"
    assert set(ids_seen) == expected, f"missed {len(expected - set(ids_seen))} events"
    assert positions == sorted(positions)
    assert len(expected) > 100


# -- appends ---------------------------------------------------------------------------------


async def test_multi_event_append_is_one_transaction(store: PostgreSQLEventStore) -> None:
    result = await store.append_events(uuid4(), "Cart", _items(50, "bulk"), 0)
    assert len({p.commit for p in result.positions}) == 1
    assert [p.sequence for p in result.positions] == sorted(p.sequence for p in result.positions)
    assert [e.aggregate_version for e in result.events] == list(range(1, 51))


async def test_terminated_backend_mid_append_leaves_no_half_batch(
    store: PostgreSQLEventStore, postgres_url: str, schema: str
) -> None:
    """Kill the connection while the INSERT runs (a trigger holds it there): nothing of the
    batch is stored and the error is typed; with retries the same append lands exactly once."""
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(
            f'CREATE FUNCTION "{schema}".slow() RETURNS trigger LANGUAGE plpgsql AS'
            " $$ BEGIN PERFORM pg_sleep(0.4); RETURN NEW; END $$"
        )
        await admin.execute(
            f"CREATE TRIGGER slow BEFORE INSERT ON {store.table}"
            f' FOR EACH ROW EXECUTE FUNCTION "{schema}".slow()'
        )

        async def kill_the_append() -> int:
            while True:
                pid = await admin.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE state = 'active'"
                    " AND query LIKE 'WITH writer AS%' AND query LIKE $1",
                    f"%{schema}%",
                )
                if pid is not None:
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                    return int(pid)
                await asyncio.sleep(0.01)

        cart = uuid4()
        batch = _items(3, "doomed")
        no_retry = PostgreSQLEventStore(
            store.engine, schema=schema, registry=contract_registry, transient_retries=0
        )
        killer = asyncio.create_task(kill_the_append())
        with pytest.raises(StoreConnectionError):
            await no_retry.append_events(cart, "Cart", batch, 0)
        await killer
        assert await store.get_stream_version(cart) == 0
        for event in batch:
            assert not await store.event_exists(event.event_id)

        # The store retries on its own: the killed attempt stored nothing, the retry lands.
        killer = asyncio.create_task(kill_the_append())
        result = await store.append_events(cart, "Cart", batch, 0)
        await killer
        assert result.new_version == 3
        stream = await store.get_events(cart)
        assert [e.event_id for e in stream.events] == [e.event_id for e in batch]
    finally:
        await admin.close()


async def test_append_joins_the_callers_transaction(
    store: PostgreSQLEventStore, engine: AsyncEngine, schema: str
) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE TABLE "{schema}".read_model (id uuid PRIMARY KEY)'))
    cart = uuid4()

    async with engine.connect() as conn:
        tx = await conn.begin()
        await store.using(conn).append_events(cart, "Cart", _items(2, "rolled back"), 0)
        await conn.execute(text(f'INSERT INTO "{schema}".read_model VALUES (:id)'), {"id": cart})
        await tx.rollback()
    assert await store.get_stream_version(cart) == 0

    async with engine.begin() as conn:
        bound = store.using(conn)
        await bound.append_events(cart, "Cart", _items(2, "kept"), 0)
        await conn.execute(text(f'INSERT INTO "{schema}".read_model VALUES (:id)'), {"id": cart})
        # inside the transaction the bound store sees its own writes, others do not yet
        assert await bound.get_stream_version(cart) == 2
        assert await store.get_stream_version(cart) == 0
    assert await store.get_stream_version(cart) == 2
    async with engine.connect() as conn:
        count = await conn.scalar(text(f'SELECT count(*) FROM "{schema}".read_model'))
    assert count == 1


async def test_conflict_inside_callers_transaction_keeps_it_usable(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    cart = uuid4()
    await store.append_events(cart, "Cart", _items(1, "first"), 0)
    async with engine.begin() as conn:
        bound = store.using(conn)
        with pytest.raises(OptimisticLockError) as caught:
            await bound.append_events(cart, "Cart", _items(1, "stale"), 0)
        assert caught.value.actual_version == 1
        # the savepoint rolled back; the transaction goes on and commits
        await bound.append_events(cart, "Cart", [CartCheckedOut()], 1)
    assert await store.get_stream_version(cart) == 2


async def test_closing_a_bound_store_leaves_its_parent_usable(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """A store from `using` shares its parent's connections and owns none of them."""
    async with engine.connect() as conn:
        bound = store.using(conn)
        assert [s async for s in bound.read_all()] == []  # the horizon: a shared connection
        await bound.close()
    assert await store.get_stream_version(uuid4()) == 0


async def test_repository_on_a_session_commits_with_the_session(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    from eventsource.testing.events import contract_registry as registry

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    from_sessionmaker = PostgreSQLEventStore(sessions, schema=store.schema, registry=registry)
    cart = uuid4()
    async with sessions() as session, session.begin():
        await from_sessionmaker.using(session).append_events(cart, "Cart", _items(3, "s"), 0)
        assert await store.get_stream_version(cart) == 0
    assert await store.get_stream_version(cart) == 3


# -- schema and migrations -------------------------------------------------------------------


async def test_create_schema_is_idempotent_and_safe_concurrently(
    postgres_url: str, schema: str
) -> None:
    stores = [PostgreSQLEventStore.from_url(postgres_url, schema=schema) for _ in range(6)]
    try:
        applied = await asyncio.gather(*(s.create_schema() for s in stores))
        every = [m.version for m in load_migrations("postgresql")]
        assert every[:2] == [1, 2]
        assert sorted(applied, key=len) == [[]] * 5 + [every]
        assert await stores[0].create_schema() == []
    finally:
        for s in stores:
            await s.close()


async def test_edited_migration_is_refused(store: PostgreSQLEventStore, postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'UPDATE "{store.schema}".migrations SET checksum = $1', "edited")
    finally:
        await conn.close()
    with pytest.raises(StoreSchemaError, match="append-only"):
        await store.create_schema()


async def test_missing_tables_are_a_schema_error(postgres_url: str, schema: str) -> None:
    async with PostgreSQLEventStore.from_url(postgres_url, schema=schema) as store:
        with pytest.raises(StoreSchemaError, match="create_schema"):
            await store.append_events(uuid4(), "Cart", _items(1, "x"), 0)
        with pytest.raises(StoreSchemaError):
            await store.get_stream_version(uuid4())


async def test_unreachable_database_is_a_connection_error() -> None:
    async with PostgreSQLEventStore.from_url(
        "postgresql://postgres@127.0.0.1:1/test", retry_timeout=0.2
    ) as store:
        with pytest.raises(StoreConnectionError):
            await store.get_stream_version(uuid4())


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="asyncpg"):
        PostgreSQLEventStore.from_url("mysql://root@127.0.0.1/test")
    with pytest.raises(TypeError, match="AsyncEngine"):
        PostgreSQLEventStore("postgresql://x")


# -- signals and the horizon -----------------------------------------------------------------


async def test_listen_wakes_on_every_committed_append(
    store: PostgreSQLEventStore, postgres_url: str, schema: str
) -> None:
    async with (
        PostgreSQLEventStore.from_url(postgres_url, schema=schema) as writer,
        store.listen() as signal,
    ):
        await writer.append_events(uuid4(), "Cart", _items(2, "n"), 0)
        async with asyncio.timeout(5):
            await signal.wait()
        assert signal.received == 1


# -- connections -----------------------------------------------------------------------------


async def test_store_holds_at_most_max_connections_and_survives_cancellation(
    postgres_url: str, schema: str
) -> None:
    tag = f"es-cache-{uuid4().hex[:8]}"
    store = PostgreSQLEventStore.from_url(
        postgres_url,
        schema=schema,
        registry=contract_registry,
        max_connections=2,
        notify=False,  # the wake-ups' connections are not the store's: leave them out
        connect_args={"server_settings": {"application_name": tag}},
    )
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    try:
        results = await asyncio.gather(
            *(store.append_events(uuid4(), "Cart", _items(2, f"c{n}"), 0) for n in range(30))
        )
        assert all(r.new_version == 2 for r in results)
        count = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", tag
        )
        assert 1 <= count <= 2

        # A read cancelled mid-statement must not poison the connection it ran on.
        slow = asyncio.create_task(
            store._fetch("sleep", "SELECT pg_sleep(5)")  # the store's own statement path
        )
        await asyncio.sleep(0.2)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        for _ in range(3):
            assert await store.get_stream_version(results[0].aggregate_id) == 2
    finally:
        await admin.close()
        await store.close()


async def test_deadlock_between_callers_transactions_is_a_transient_error(
    store: PostgreSQLEventStore, engine: AsyncEngine
) -> None:
    """Two transactions append to two streams in opposite order: PostgreSQL breaks the deadlock
    by failing one of them, which arrives as a retryable TransientStoreError."""
    first, second = uuid4(), uuid4()
    async with engine.connect() as c1, engine.connect() as c2:
        await c1.begin()
        await c2.begin()
        await store.using(c1).append_events(first, "Cart", _items(1, "a"), 0)
        await store.using(c2).append_events(second, "Cart", _items(1, "b"), 0)

        async def cross(conn: Any, stream: UUID) -> BaseException | None:
            try:
                await store.using(conn).append_events(stream, "Cart", _items(1, "x"), 0)
            except Exception as exc:
                await conn.rollback()  # releases the locks the other transaction waits for
                return exc
            return None

        outcomes = await asyncio.gather(cross(c1, second), cross(c2, first))
    failures = [o for o in outcomes if o is not None]
    assert any(isinstance(f, TransientStoreError) and "deadlock" in str(f) for f in failures), (
        failures
    )


def test_database_errors_map_to_typed_errors() -> None:
    from asyncpg import exceptions as pg_errors

    from eventsource._internal.postgresql import map_error

    assert type(map_error(pg_errors.SerializationError("x"), "w")) is TransientStoreError
    assert type(map_error(pg_errors.DeadlockDetectedError("x"), "w")) is TransientStoreError
    assert type(map_error(pg_errors.AdminShutdownError("x"), "w")) is StoreConnectionError
    assert type(map_error(ConnectionResetError("x"), "w")) is StoreConnectionError
    lost_state = asyncpg.exceptions.InternalClientError("cannot switch to state 12")
    assert type(map_error(lost_state, "w")) is StoreConnectionError
    assert type(map_error(pg_errors.UndefinedTableError("x"), "w")) is StoreSchemaError


async def _listening_backends(admin: asyncpg.Connection, channel: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND query LIKE 'LISTEN%' AND strpos(query, $1) > 0",
        channel,
    )
    return [row["pid"] for row in rows]


async def test_listen_comes_back_after_its_session_is_terminated(
    store: PostgreSQLEventStore, postgres_url: str, schema: str
) -> None:
    """The listening session dies: the signal fires once the LISTEN is back (appends made
    meanwhile were never notified), and later appends are signalled again. Without the
    re-LISTEN both waits run into their timeout."""
    admin = await asyncpg.connect(postgres_url)
    try:
        async with (
            PostgreSQLEventStore.from_url(postgres_url, schema=schema) as writer,
            store.listen() as signal,
        ):
            (first,) = await _listening_backends(admin, store.channel)
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
            await writer.append_events(uuid4(), "Cart", _items(1, "n"), 0)
            async with asyncio.timeout(10):
                await signal.wait()  # listening again, and told to read
            (second,) = await _listening_backends(admin, store.channel)
            assert second != first
            await writer.append_events(uuid4(), "Cart", _items(1, "m"), 0)
            async with asyncio.timeout(10):
                await signal.wait()  # a NOTIFY on the new session
        assert await _listening_backends(admin, store.channel) == []  # given back unlistened
    finally:
        await admin.close()


class _FreezingProxy:
    """A TCP proxy to PostgreSQL whose open connections can be frozen: bytes stop flowing
    both ways while the sockets stay open, as on a half-open connection that never reports.
    New connections flow normally."""

    def __init__(self, port: int) -> None:
        self._target = port
        self._frozen: list[asyncio.Event] = []
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> _FreezingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        """Cut every connection (the frozen ones too), so nothing waits on them."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    def freeze(self) -> None:
        for frozen in self._frozen:
            frozen.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frozen = asyncio.Event()
        self._frozen.append(frozen)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if frozen.is_set():
                    continue  # swallowed: nobody learns that the link is dead
                sink.write(data)
                await sink.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            writer.close()
            up_writer.close()


async def test_listen_replaces_a_half_open_session(postgres_url: str) -> None:
    """A listening connection that stops answering without closing is found dead by the
    periodic check (its termination listener never fires) and replaced: the reader is woken.
    """
    from sqlalchemy.engine import make_url

    from eventsource._internal.postgresql_listen import listening

    url = make_url(postgres_url.replace("postgresql://", "postgresql+asyncpg://"))
    woken = asyncio.Event()
    try:
        async with _FreezingProxy(url.port or 5432) as proxy:
            engine = create_async_engine(url.set(host="127.0.0.1", port=proxy.port))
            async with listening(
                engine,
                f"es_half_open_{uuid4().hex[:8]}",
                lambda *_: woken.set(),
                "half-open test",
                check_interval=0.2,
                timeout=0.5,
            ):
                proxy.freeze()
                async with asyncio.timeout(10):
                    await woken.wait()
    finally:
        await engine.dispose()
