"""The outbox and inbox contracts on every backend (PostgreSQL in a schema of its own, SQLite
in `tmp_path`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource._internal.clock import utc_now
from eventsource.events.serialization import EventCodec
from eventsource.outbox import (
    InboxRepository,
    InMemoryInboxRepository,
    InMemoryOutboxRepository,
    OutboxRepository,
)
from eventsource.testing import InboxRepositoryContract, OutboxRepositoryContract
from eventsource.testing.events import ItemAdded


class TestInMemoryOutbox(OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        return InMemoryOutboxRepository()


class TestInMemoryInbox(InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        return InMemoryInboxRepository()


class _SQLiteFile:
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "outbox.db"


@pytest.mark.sqlite
class TestSQLiteOutbox(_SQLiteFile, OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        from eventsource.outbox import SQLiteOutboxRepository

        return SQLiteOutboxRepository(self.path, table='my "odd" outbox')


@pytest.mark.sqlite
class TestSQLiteInbox(_SQLiteFile, InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        from eventsource.outbox import SQLiteInboxRepository

        return SQLiteInboxRepository(self.path)


class _PostgreSQLSchema:
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema


@pytest.mark.postgresql
class TestPostgreSQLOutbox(_PostgreSQLSchema, OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        from eventsource.outbox import PostgreSQLOutboxRepository

        outbox = PostgreSQLOutboxRepository.from_url(self.url, schema=self.schema, prefix="x_")
        await outbox.create_schema()
        return outbox


@pytest.mark.postgresql
class TestPostgreSQLInbox(_PostgreSQLSchema, InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        from eventsource.outbox import PostgreSQLInboxRepository

        inbox = PostgreSQLInboxRepository.from_url(self.url, schema=self.schema)
        await inbox.create_schema()
        return inbox


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
async def short_lease_outbox(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OutboxRepository]:
    """An SQL outbox whose leases expire after half a second."""
    outbox: OutboxRepository
    if request.param == "sqlite":
        from eventsource.outbox import SQLiteOutboxRepository

        outbox = SQLiteOutboxRepository(tmp_path / "outbox.db", lease_seconds=0.5)
    else:
        from eventsource.outbox import PostgreSQLOutboxRepository

        url, schema = request.getfixturevalue("postgres_url"), f"es_t_{uuid4().hex[:12]}"
        pg_outbox = PostgreSQLOutboxRepository.from_url(url, schema=schema, lease_seconds=0.5)
        await pg_outbox.create_schema()
        yield pg_outbox
        async with pg_outbox.engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await pg_outbox.close()
        return
    yield outbox
    await outbox.close()


async def test_an_expired_lease_is_claimed_again_and_its_late_marks_are_ignored(
    short_lease_outbox: OutboxRepository,
) -> None:
    outbox = short_lease_outbox
    events = [ItemAdded(name=f"item-{v}").attached(uuid4(), "Cart", 1) for v in range(2)]
    await outbox.add(events)
    stale_claim = outbox.claim(10)
    stale = await stale_claim.__aenter__()
    assert len(stale.entries) == 2
    async with outbox.claim(10) as batch:
        assert batch.entries == [], "rows under a live lease are not claimed"
    await asyncio.sleep(0.6)  # the first relay stalls past its lease
    async with outbox.claim(10) as fresh:
        assert [e.id for e in fresh.entries] == [e.id for e in stale.entries]
        await stale.published(stale.entries)
        await stale.failed(stale.entries, "late", utc_now())
        await stale_claim.__aexit__(None, None, None)
        stats = await outbox.stats()
        assert (stats.published, stats.failing) == (0, 0), "the stale relay's marks apply"
        await fresh.published(fresh.entries)
    stats = await outbox.stats()
    assert (stats.pending, stats.published) == (0, 2)


@pytest.mark.sqlite
async def test_sqlite_outbox_files_from_before_parking_keep_working(tmp_path: Path) -> None:
    """A file whose outbox table has no `parked_at` column (as every file made before rows
    could be parked): repositories opening it together add the column once, and the rows
    written before are published and parked like new ones."""
    import sqlite3

    from eventsource.outbox import SQLiteOutboxRepository
    from eventsource.stores.sqlite import outbox_ddl

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        for statement in outbox_ddl("outbox"):
            db.execute(statement)
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    assert "parked_at" not in columns
    writer = SQLiteOutboxRepository(path)
    events = [ItemAdded(name=f"item-{v}").attached(uuid4(), "Cart", 1) for v in range(3)]
    # The rows exist before any repository that knows parking opened the file:
    with sqlite3.connect(path) as db:
        for e in events:
            db.execute(
                "INSERT INTO outbox (event_id, event_type, event_version, aggregate_id,"
                " aggregate_type, aggregate_version, payload, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(e.event_id),
                    e.event_type,
                    e.event_version,
                    str(e.aggregate_id),
                    e.aggregate_type,
                    e.aggregate_version,
                    EventCodec.encode(e),
                    "2026-01-01T00:00:00.000000+00:00",
                    "2026-01-01T00:00:00.000000+00:00",
                ),
            )
    outboxes = [SQLiteOutboxRepository(path) for _ in range(4)]
    stats = await asyncio.gather(*(outbox.stats() for outbox in outboxes))
    assert {(s.pending, s.parked) for s in stats} == {(3, 0)}
    async with outboxes[0].claim(1) as batch:
        await batch.parked(batch.entries, "bad")
    async with outboxes[1].claim(10) as batch:
        assert [e.event_id for e in batch.entries] == [e.event_id for e in events[1:]]
        await batch.published(batch.entries)
    (parked,) = await outboxes[2].list_parked()
    assert parked.event_id == events[0].event_id
    for outbox in (writer, *outboxes):
        await outbox.close()


@pytest.mark.postgresql
async def test_postgresql_claim_skips_rows_behind_a_claim_not_committed_yet(
    postgres_url: str, schema: str
) -> None:
    """Another relay's claim statement holds the first rows of a cart locked and its lease is
    not visible yet: this claim must take neither them nor the cart's later rows."""
    import asyncpg

    from eventsource.outbox import PostgreSQLOutboxRepository

    outbox = PostgreSQLOutboxRepository.from_url(postgres_url, schema=schema)
    await outbox.create_schema()
    cart_id = uuid4()
    cart = [ItemAdded(name=f"item-{v}").attached(cart_id, "Cart", v) for v in range(1, 5)]
    other = ItemAdded(name="other").attached(uuid4(), "Cart", 1)
    await outbox.add([*cart[:2], other, *cart[2:]])
    relay = await asyncpg.connect(postgres_url)
    try:
        async with relay.transaction():
            locked = await relay.fetch(
                f'SELECT id FROM "{schema}".outbox ORDER BY id LIMIT 2 FOR UPDATE'
            )
            assert len(locked) == 2
            async with outbox.claim(10) as batch:
                assert [e.event_id for e in batch.entries] == [other.event_id]
                await batch.published(batch.entries)
            async with outbox.claim(10) as batch:
                assert batch.entries == []
    finally:
        await relay.close()
    async with outbox.claim(10) as batch:
        assert [e.event_id for e in batch.entries] == [e.event_id for e in cart]
    await outbox.close()


@pytest.mark.sqlite
async def test_a_cancelled_sqlite_outbox_call_leaves_the_file_to_other_writers(
    tmp_path: Path,
) -> None:
    """An outbox call cancelled while it waited for the file's write lock must not take the
    lock later and keep it: the store's appends to the same file go on."""
    import contextlib
    import sqlite3

    from eventsource.outbox import SQLiteOutboxRepository
    from eventsource.stores.sqlite import SQLiteEventStore
    from eventsource.testing.events import contract_registry

    path = tmp_path / "app.db"
    store = SQLiteEventStore(path, registry=contract_registry, outbox=True, busy_timeout=2)
    outbox = SQLiteOutboxRepository(path)
    try:
        await store.connect()
        await outbox.stats()  # its connection is open
        other = sqlite3.connect(path, isolation_level=None)  # as another process would
        try:
            other.execute("BEGIN IMMEDIATE")
            event = ItemAdded(name="cancelled").attached(uuid4(), "Cart", 1)
            adding = asyncio.ensure_future(outbox.add([event]))
            for _ in range(3):
                await asyncio.sleep(0)
            adding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await adding
            other.execute("COMMIT")
        finally:
            other.close()
        appended = await store.append_events(uuid4(), "Cart", [ItemAdded(name="next")], 0)
        assert appended.new_version == 1
        stats = await outbox.stats()
        assert stats.pending in (1, 2)  # the store's event, and the cancelled one or not
    finally:
        await outbox.close()
        await store.close()
