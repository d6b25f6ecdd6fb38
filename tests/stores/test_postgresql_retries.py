"""PostgreSQLEventStore rides out lost connections: reads and its own appends are retried
within `retry_timeout`; a caller's transaction is not (it is gone, the error is raised).

Every test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from eventsource import ExpectedVersion, ReadOptions, StoreConnectionError
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.postgresql


def _items(count: int, tag: str) -> list[ItemAdded]:
    return [ItemAdded(name=f"{tag}-{n}", quantity=n) for n in range(1, count + 1)]


async def _kill_all(admin: asyncpg.Connection, tag: str) -> int:
    """Terminate every backend of the store under test (found by its application_name)."""
    return int(
        await admin.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1 AND pid <> pg_backend_pid()",
            tag,
        )
    )


@pytest.fixture
async def tagged(postgres_url: str, schema: str) -> AsyncIterator[tuple[PostgreSQLEventStore, str]]:
    tag = f"es-retry-{uuid4().hex[:8]}"
    store = PostgreSQLEventStore.from_url(
        postgres_url,
        schema=schema,
        registry=contract_registry,
        max_connections=4,
        retry_timeout=30.0,  # generous: a loaded CI machine reconnects slowly
        connect_args={"server_settings": {"application_name": tag}},
    )
    await store.create_schema()
    try:
        yield store, tag
    finally:
        await store.close()


async def test_reads_and_appends_ride_out_killed_connections(
    tagged: tuple[PostgreSQLEventStore, str], postgres_url: str
) -> None:
    """The store's backends are terminated again and again while appends (exact and ANY) and
    reads (stream pages, feed pages, versions) run: no call raises, no event is lost or
    stored twice, no page is yielded twice."""
    store, tag = tagged
    admin = await asyncpg.connect(postgres_url)
    stop = asyncio.Event()
    kills = 0
    rng = random.Random(10)
    appended: dict[UUID, list[UUID]] = {}

    async def killer() -> None:
        nonlocal kills
        while not stop.is_set():
            kills += await _kill_all(admin, tag)
            await asyncio.sleep(rng.uniform(0.05, 0.15))

    async def appender(n: int) -> None:
        stream = uuid4()
        appended[stream] = []
        i = 0
        while i < 10 or (kills < 10 and i < 400):  # until connections were cut often enough
            i += 1
            batch = _items(rng.randint(1, 3), f"a{n}-{i}")
            expected = len(appended[stream]) if i % 2 else ExpectedVersion.ANY
            result = await store.append_events(stream, "Cart", batch, expected)
            assert result.new_version == len(appended[stream]) + len(batch)
            appended[stream] += [e.event_id for e in batch]

    async def reader() -> int:
        reads = 0
        while not stop.is_set():
            feed = [s.event_id async for s in store.read_all(ReadOptions(batch_size=4))]
            assert len(feed) == len(set(feed)), "a feed page was yielded twice"
            for stream, ids in list(appended.items()):
                versions = [
                    s.event.aggregate_version
                    async for s in store.read_stream(stream, ReadOptions(batch_size=2))
                ]
                assert versions == list(range(1, len(versions) + 1))
                assert len(versions) >= len(ids) - 3  # an append may be in flight
                assert await store.get_stream_version(stream) >= len(versions)
            reads += 1
        return reads

    killing = asyncio.create_task(killer())
    reading = [asyncio.create_task(reader()) for _ in range(2)]
    try:
        await asyncio.gather(*(appender(n) for n in range(4)))
    finally:
        stop.set()
        await killing
        reads = await asyncio.gather(*reading)
        await admin.close()
    assert kills >= 10, "the test must actually cut connections"
    assert all(r > 0 for r in reads)
    for stream, ids in appended.items():
        stored = [s.event_id async for s in store.read_stream(stream)]
        assert stored == ids
    feed = [s.event_id async for s in store.read_all()]
    assert sorted(feed) == sorted(i for ids in appended.values() for i in ids)


async def test_a_callers_transaction_is_not_retried(
    tagged: tuple[PostgreSQLEventStore, str], postgres_url: str
) -> None:
    store, _ = tagged
    engine = create_async_engine(postgres_url.replace("postgresql://", "postgresql+asyncpg://"))
    admin = await asyncpg.connect(postgres_url)
    stream = uuid4()
    try:
        async with engine.connect() as conn:
            await conn.begin()
            bound = store.using(conn)
            await bound.append_events(stream, "Cart", _items(1, "first"), 0)
            pid = (await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(StoreConnectionError):
                await bound.append_events(stream, "Cart", _items(1, "second"), 1)
    finally:
        await admin.close()
        await engine.dispose()
    assert await store.get_stream_version(stream) == 0


async def test_retry_budget_is_configurable(postgres_url: str, schema: str) -> None:
    """`retry_timeout` bounds the retries in time (0 turns them off); `transient_retries`
    still caps their number; both are validated."""
    unreachable = "postgresql://postgres@127.0.0.1:1/test"
    async with PostgreSQLEventStore.from_url(unreachable, retry_timeout=0.2) as store:
        assert store.retry_timeout == 0.2
        with pytest.raises(StoreConnectionError):
            await store.get_stream_version(uuid4())
    with pytest.raises(ValueError, match="retry_timeout"):
        PostgreSQLEventStore.from_url(postgres_url, retry_timeout=-1)
    with pytest.raises(ValueError, match="transient_retries"):
        PostgreSQLEventStore.from_url(postgres_url, transient_retries=-1)
