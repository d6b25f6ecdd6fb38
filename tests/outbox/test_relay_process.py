"""The outbox's crash guarantee with real processes: a relay process SIGKILLed after it
published a batch to Redis but before it marked it. Once the dead process's lease expires,
another relay publishes the batch again and the consumer's inbox drops every duplicate."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig
from eventsource.events.base import DomainEvent
from eventsource.outbox import InboxHandler, InboxRepository, OutboxRelay, OutboxRepository
from eventsource.stores.interface import EventStore
from eventsource.testing import contract_registry
from eventsource.testing.bus import eventually
from eventsource.testing.events import ItemAdded

pytestmark = [pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str, str, EventStore, OutboxRepository, InboxRepository]]:
    if request.param == "sqlite":
        from eventsource import SQLiteEventStore
        from eventsource.outbox import SQLiteInboxRepository, SQLiteOutboxRepository

        path = str(tmp_path / "events.db")
        store = SQLiteEventStore(path, registry=contract_registry, outbox=True)
        await store.connect()
        outbox = SQLiteOutboxRepository(path, lease_seconds=1.0)
        inbox = SQLiteInboxRepository(path)
        yield "sqlite", path, "", store, outbox, inbox
        for closing in (outbox, inbox, store):
            await closing.close()
        return
    from eventsource import PostgreSQLEventStore
    from eventsource.outbox import PostgreSQLInboxRepository, PostgreSQLOutboxRepository

    url = request.getfixturevalue("postgres_url")
    schema = f"es_t_{uuid4().hex[:12]}"
    pg_store = PostgreSQLEventStore.from_url(
        url, schema=schema, registry=contract_registry, outbox=True
    )
    await pg_store.create_schema()
    pg_outbox = PostgreSQLOutboxRepository.for_store(pg_store)
    pg_inbox = PostgreSQLInboxRepository.for_store(pg_store)
    yield "postgresql", url, schema, pg_store, pg_outbox, pg_inbox
    for closing in (pg_outbox, pg_inbox):
        await closing.close()
    async with pg_store.engine.begin() as conn:
        await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    await pg_store.close()


async def test_a_killed_relay_republishes_and_the_inbox_drops_the_duplicates(
    database: tuple[str, str, str, EventStore, OutboxRepository, InboxRepository],
    redis_url: str,
    prefix: str,
) -> None:
    kind, where, schema, store, outbox, inbox = database

    def bus(group: str) -> RedisEventBus:
        config = RedisEventBusConfig(url=redis_url, stream_prefix=prefix, consumer_group=group)
        return RedisEventBus(config, registry=contract_registry)

    consumer = bus("reports")
    received: list[DomainEvent] = []
    handler = InboxHandler(received.append, inbox, "reports")
    consumer.subscribe(ItemAdded, handler)
    await consumer.start_consuming()
    carts = [uuid4(), uuid4()]
    for cart in carts:
        events = [ItemAdded(name=f"item-{v}") for v in range(1, 6)]
        await store.append_events(cart, "Cart", events, 0)

    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.outbox._relay_worker",
        kind,
        where,
        schema,
        redis_url,
        prefix,
        cwd=ROOT,
    )
    assert await asyncio.wait_for(worker.wait(), 60) == -signal.SIGKILL
    await eventually(lambda: len(received) == 10, 20, "the dead relay's batch")
    assert (await outbox.stats()).pending == 10, "the dead relay must not have marked anything"

    publisher = bus("publisher")
    relay = OutboxRelay(outbox, publisher, registry=contract_registry, poll_interval=0.1)
    await relay.start()
    await eventually(lambda: handler.duplicates == 10, 30, "the batch published again")
    await relay.stop()
    assert (await outbox.stats()).pending == 0
    assert handler.processed == 10
    assert len(received) == 10
    for cart in carts:
        assert [e.aggregate_version for e in received if e.aggregate_id == cart] == [1, 2, 3, 4, 5]
    await consumer.shutdown()
    await publisher.shutdown()


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    """This module calls the shared `redis_prefix` fixture `prefix`."""
    return redis_prefix
