"""Wake-ups of the PostgreSQL store: after commit, coalesced, never in an append's way.

The store's own appends do not NOTIFY; a notifier of the process does, after commit, on a
connection of its own (`stores/_postgresql_notify.py`). To stop that notifier at will, the
tests hold every connection of a small pool: its next NOTIFY then waits for (or, with a short
`pool_timeout`, fails to get) a connection while the appends go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import warnings
from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from eventsource import Position, StoredEvent
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.postgresql

_NOTIFIER_QUERY = "SELECT pg_notify($1, $2)"


def _items(count: int) -> list[ItemAdded]:
    return [ItemAdded(name=f"item-{n}", quantity=n) for n in range(1, count + 1)]


class _Outsider:
    """A plain asyncpg LISTEN on the channel: what another process receives."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.received: list[tuple[int, str]] = []
        self._arrived = asyncio.Event()

    def on_notify(self, _connection: object, pid: int, _channel: str, payload: str) -> None:
        self.received.append((pid, payload))
        self._arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def settle(self) -> None:
        """Take delivery of every notification committed before this call: the server sends
        them before it reads the next command, so the second round trip comes after them."""
        await self.connection.fetchval("SELECT 1")
        await self.connection.fetchval("SELECT 1")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def _outsider(url: str, channel: str) -> AsyncIterator[_Outsider]:
    connection = await asyncpg.connect(url)
    outsider = _Outsider(connection)
    try:
        await connection.add_listener(channel, outsider.on_notify)
        yield outsider
    finally:
        await connection.close()


def _engine(url: str, **pool: object) -> AsyncEngine:
    return create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"), **pool)


async def _hold_the_rest(engine: AsyncEngine) -> list[AsyncConnection]:
    """Check out every connection the pool has left (no overflow): nobody gets one now."""
    pool = engine.pool
    free = pool.size() - pool.checkedout()  # type: ignore[attr-defined]
    return [await engine.connect() for _ in range(free)]


async def _warm(store: PostgreSQLEventStore) -> None:
    """Make the store open all of its `max_connections` connections now."""
    await asyncio.gather(*(store.get_stream_version(uuid4()) for _ in range(4)))


async def test_appends_do_not_notify_nor_wait_and_one_notify_covers_them(
    postgres_url: str, schema: str
) -> None:
    """30 appends while the notifier cannot get a connection: they all return, readers in the
    process are signalled at once, nothing reaches PostgreSQL's notification queue; once the
    pool frees up, ONE NOTIFY lists the aggregate types of all of them. The old store sent
    30 NOTIFYs, each inside its append's transaction."""
    engine = _engine(postgres_url, pool_size=4, max_overflow=0, pool_timeout=30)
    store = PostgreSQLEventStore(
        engine, schema=schema, registry=contract_registry, max_connections=2
    )
    reader = PostgreSQLEventStore(engine, schema=schema, registry=contract_registry)
    try:
        await store.create_schema()
        async with _outsider(postgres_url, store.channel) as outside, reader.listen() as local:
            await _warm(store)
            held = await _hold_the_rest(engine)
            try:
                results = await asyncio.gather(
                    *(
                        store.append_events(uuid4(), kind, _items(1), 0)
                        for kind in ("Cart", "Order", "Cart") * 10
                    )
                )
                assert all(r.new_version == 1 for r in results)
                async with asyncio.timeout(5):
                    await local.wait()  # another store of the process: signalled locally
                await outside.settle()
                assert outside.received == []
            finally:
                for connection in held:
                    await connection.close()
            await outside.wait_for(1)
            await outside.settle()
            assert [payload for _, payload in outside.received] == ["Cart\nOrder"]
    finally:
        await reader.close()
        await store.close()
        await engine.dispose()


async def test_caller_transaction_notifies_at_its_commit_only(
    store: PostgreSQLEventStore, postgres_url: str
) -> None:
    """In `using(connection)` the store cannot see the commit: the NOTIFY stays in the
    caller's transaction, delivered when it commits and dropped when it rolls back."""
    engine = _engine(postgres_url)
    try:
        async with _outsider(postgres_url, store.channel) as outside, engine.connect() as conn:
            async with conn.begin() as rolled_back:
                await store.using(conn).append_events(uuid4(), "Refused", _items(1), 0)
                await rolled_back.rollback()
            async with conn.begin():
                await store.using(conn).append_events(uuid4(), "Cart", _items(2), 0)
                await store.using(conn).append_events(uuid4(), "Cart", _items(1), 0)
                pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
                await outside.settle()
                assert outside.received == []  # not before the commit
            await outside.wait_for(1)
            await outside.settle()
            assert outside.received == [(pid, "Cart")]  # once per transaction and type
    finally:
        await engine.dispose()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_a_failing_notifier_never_fails_an_append_and_polling_covers(
    postgres_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The notifier cannot get a connection (pool timeout): it logs and retries; appends
    succeed and a subscription in another process (here: another engine) still sees every
    event by polling; when connections are back, the NOTIFY goes out."""
    engine = _engine(postgres_url, pool_size=2, max_overflow=0, pool_timeout=0.05)
    store = PostgreSQLEventStore(
        engine, schema=schema, registry=contract_registry, max_connections=1
    )
    elsewhere = PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=contract_registry
    )
    seen: list[StoredEvent] = []

    async def handle(stored: StoredEvent) -> None:
        seen.append(stored)

    config = SubscriptionConfig(poll_interval=0.1)
    manager = SubscriptionManager(elsewhere, InMemoryCheckpointRepository(), config=config)
    subscription = manager.subscribe(handle, name="polling")
    try:
        await store.create_schema()
        await _warm(store)
        async with _outsider(postgres_url, store.channel) as outside, manager:
            held = await _hold_the_rest(engine)
            try:
                with caplog.at_level(logging.WARNING, "eventsource.stores._postgresql_notify"):
                    last = Position.START
                    for n in range(5):
                        result = await store.append_events(uuid4(), "Cart", _items(n + 1), 0)
                        last = result.last_position
                    await subscription.wait_for(last, timeout=10)
                    assert len(seen) == 15
                    async with asyncio.timeout(10):  # the notifier's attempt failed: logged
                        while not _logged(caplog, "NOTIFY"):  # noqa: ASYNC110 - a log record
                            await asyncio.sleep(0.01)
                await outside.settle()
                assert outside.received == []
            finally:
                for connection in held:
                    await connection.close()
            await outside.wait_for(1)  # the notifier retried and got through
            assert outside.received[0][1] == "Cart"
    finally:
        await elsewhere.close()
        await store.close()
        await engine.dispose()


async def _notifier_backends(admin: asyncpg.Connection, application: str) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query = $2",
        application,
        _NOTIFIER_QUERY,
    )
    return [row["pid"] for row in rows]


async def test_terminated_notifier_backend_is_replaced(postgres_url: str, schema: str) -> None:
    """pg_terminate_backend on the notifier's session: the next append still succeeds and a
    subscription elsewhere (polling only every minute) is still woken, by a NOTIFY from a new
    session."""
    application = f"es-notify-{uuid4().hex[:8]}"
    store = PostgreSQLEventStore.from_url(
        postgres_url,
        schema=schema,
        registry=contract_registry,
        connect_args={"server_settings": {"application_name": application}},
    )
    elsewhere = PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=contract_registry
    )
    config = SubscriptionConfig(poll_interval=60.0)
    manager = SubscriptionManager(elsewhere, InMemoryCheckpointRepository(), config=config)
    seen: list[StoredEvent] = []

    async def handle(stored: StoredEvent) -> None:
        seen.append(stored)

    subscription = manager.subscribe(handle, name="woken")
    admin = await asyncpg.connect(postgres_url)
    try:
        await store.create_schema()
        async with manager:
            await asyncio.sleep(0.2)  # the subscription went live and waits for a wake-up
            first = await store.append_events(uuid4(), "Cart", _items(1), 0)
            await subscription.wait_for(first.last_position, timeout=10)
            victims = await _notifier_backends(admin, application)
            assert victims
            for victim in victims:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
            second = await store.append_events(uuid4(), "Cart", _items(2), 0)
            await subscription.wait_for(second.last_position, timeout=10)
            replacements = await _notifier_backends(admin, application)
            assert replacements
            assert not set(replacements) & set(victims)
        assert len(seen) == 3
    finally:
        await admin.close()
        await elsewhere.close()
        await store.close()


async def test_close_flushes_the_wake_up_and_leaves_nothing_behind(
    postgres_url: str, schema: str
) -> None:
    """`close()` right after an append: the pending NOTIFY still goes out, and no task,
    connection or ResourceWarning is left."""
    application = f"es-notify-{uuid4().hex[:8]}"
    store = PostgreSQLEventStore.from_url(
        postgres_url,
        schema=schema,
        registry=contract_registry,
        connect_args={"server_settings": {"application_name": application}},
    )
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    try:
        async with _outsider(postgres_url, store.channel) as outside:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                await store.append_events(uuid4(), "Cart", _items(1), 0)
                await store.close()
                gc.collect()
            await outside.wait_for(1)
            assert outside.received[0][1] == "Cart"
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert [t for t in asyncio.all_tasks() if "NOTIFY" in t.get_name()] == []
        left = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application
        )
        assert left == 0
    finally:
        await admin.close()
        await store.close()
