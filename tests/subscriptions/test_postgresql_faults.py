"""Subscriptions on PostgreSQL while their connections are killed (`pg_terminate_backend`
every fifth of a second): every event is handled, none is dead-lettered for a lost
connection (only a handler's own failure is), the subscription ends LIVE, and nobody
restarts it by hand (DESIGN.md decision 7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest

from eventsource import EventStore, Position, StoredEvent
from eventsource.projections import handles
from eventsource.subscriptions import (
    SubscriptionConfig,
    SubscriptionManager,
    SubscriptionState,
)
from tests.subscriptions.test_subscriptions import Added, append, reaches, registry

pytestmark = pytest.mark.postgresql

CONFIG = SubscriptionConfig(batch_size=20, poll_interval=0.1, retry_base=0.01, retry_cap=0.2)
EVENTS = 200
POISON = 77


def _tagged(tag: str) -> dict[str, Any]:
    """Engine options naming the connections, so the killer finds this test's only."""
    return {"connect_args": {"server_settings": {"application_name": tag}}}


@contextlib.asynccontextmanager
async def killing(postgres_url: str, tag: str) -> AsyncIterator[list[int]]:
    """Terminates every backend named `tag` every 0.2 s while the block runs; yields the
    list of terminated backend counts."""
    import asyncpg

    admin = await asyncpg.connect(postgres_url)
    kills: list[int] = []

    async def kill() -> None:
        while True:
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                tag,
            )
            kills.append(int(killed))
            await asyncio.sleep(0.2)

    task = asyncio.create_task(kill())
    try:
        yield kills
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await admin.close()


async def write(store: EventStore) -> Position:
    last = Position.START
    for start in range(0, EVENTS, 4):
        last = await append(store, *range(start, start + 4))
        await asyncio.sleep(0.02)
    return last


async def test_a_subscription_outlives_its_connections_being_killed(
    postgres_url: str, schema: str
) -> None:
    from eventsource import PostgreSQLEventStore
    from eventsource.repositories.postgresql import (
        PostgreSQLCheckpointRepository,
        PostgreSQLDLQRepository,
    )
    from eventsource.subscriptions.postgresql import PostgreSQLLeases

    tag = f"es-faults-{uuid4().hex[:8]}"
    writer = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await writer.create_schema()
    store = PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=registry, **_tagged(tag)
    )
    checkpoints = PostgreSQLCheckpointRepository.from_url(
        postgres_url, schema=schema, **_tagged(tag)
    )
    dead_letters = PostgreSQLDLQRepository.from_url(postgres_url, schema=schema, **_tagged(tag))
    await checkpoints.create_schema()
    seen: list[int] = []
    states: set[SubscriptionState] = set()

    async def projector(stored: StoredEvent) -> None:
        assert isinstance(stored.event, Added)
        if stored.event.n == POISON:  # parked in the dead-letter queue while connections die
            raise ValueError(f"cannot take {POISON}")
        seen.append(stored.event.n)

    manager = SubscriptionManager(
        store, checkpoints, dead_letters, config=CONFIG, leases=PostgreSQLLeases.for_store(store)
    )
    subscription = manager.subscribe(projector, name="projector")
    try:
        async with manager:
            async with killing(postgres_url, tag) as kills:
                writing = asyncio.create_task(write(writer))
                while not writing.done():
                    states.add(subscription.state)
                    await asyncio.sleep(0.01)
                last = writing.result()
            await subscription.wait_for(last, timeout=30)
            await reaches(subscription, SubscriptionState.LIVE)
            async with asyncio.timeout(10):  # the store's pool may still hold killed sessions
                while not (health := await manager.health()).ready:
                    assert health.healthy
                    await asyncio.sleep(0.05)
        inspect = PostgreSQLDLQRepository.from_url(postgres_url, schema=schema)  # no dead sessions
        letters = await inspect.list(status=None)
        await inspect.close()
    finally:
        for closing in (dead_letters, checkpoints, store, writer):
            await closing.close()
    assert sum(kills) > 10  # the faults did happen
    assert SubscriptionState.FAILED not in states
    assert set(seen) == set(range(EVENTS)) - {POISON}  # every other event
    # only the handler's own failure is dead-lettered (once), none for the lost connections
    assert [letter.error for letter in letters] == [f"ValueError: cannot take {POISON}"]


async def test_a_database_projection_outlives_its_connections_being_killed(
    postgres_url: str, schema: str
) -> None:
    """A connection error inside a DatabaseProjection's transaction is infrastructure: the
    event is tried again after a pause, not dead-lettered; its effect lands exactly once."""
    import asyncpg
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncConnection

    from eventsource import PostgreSQLEventStore
    from eventsource.projections import DatabaseProjection
    from eventsource.repositories import InMemoryCheckpointRepository, InMemoryDLQRepository
    from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository

    class Sums(DatabaseProjection):
        @handles(Added)
        async def _added(self, connection: AsyncConnection, event: Added) -> None:
            await connection.execute(
                text(f'UPDATE "{schema}".sums SET total = total + :n, applied = applied + 1'),
                {"n": event.n},
            )

    tag = f"es-faults-{uuid4().hex[:8]}"
    writer = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await writer.create_schema()
    store = PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=registry, **_tagged(tag)
    )
    checkpoints = PostgreSQLCheckpointRepository(store.engine, schema=schema)
    await checkpoints.create_schema()
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE TABLE "{schema}".sums (total int, applied int)')
    await admin.execute(f'INSERT INTO "{schema}".sums VALUES (0, 0)')
    dead_letters = InMemoryDLQRepository()
    config = SubscriptionConfig(
        batch_size=20, poll_interval=0.1, retry_base=0.01, retry_cap=0.2, circuit_breaker=None
    )
    try:
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), dead_letters, config=config
        ) as manager:
            subscription = manager.subscribe(Sums(store.engine, checkpoints))
            async with killing(postgres_url, tag) as kills:
                last = await write(writer)
            await subscription.wait_for(last, timeout=30)
            await reaches(subscription, SubscriptionState.LIVE)
        total, applied = await admin.fetchrow(f'SELECT total, applied FROM "{schema}".sums')
    finally:
        await admin.close()
        await checkpoints.close()
        await store.close()
        await writer.close()
    assert sum(kills) > 10
    assert await dead_letters.count(status=None) == 0
    assert (total, applied) == (sum(range(EVENTS)), EVENTS)  # each effect exactly once


async def test_health_reports_an_unreachable_database_without_raising() -> None:
    """The database is down from the start: the subscription waits in RECONNECTING (it does
    not fail), and health says so, with the store's error, instead of raising."""
    from eventsource import PostgreSQLEventStore
    from eventsource.repositories import InMemoryCheckpointRepository

    # port 1 on loopback: nothing listens there, every connection is refused
    store = PostgreSQLEventStore.from_url(
        "postgresql://postgres@127.0.0.1:1/test", retry_timeout=0.2
    )
    try:
        async with SubscriptionManager(
            store, InMemoryCheckpointRepository(), config=CONFIG
        ) as manager:
            subscription = manager.subscribe(_ignore, name="projector")
            await reaches(subscription, SubscriptionState.RECONNECTING)
            health = await manager.health()
            (one,) = health.subscriptions
            alone = await subscription.health()
    finally:
        await store.close()
    assert (one.state, one.events_behind) == (SubscriptionState.RECONNECTING, None)
    assert one.store_error is not None
    assert "StoreConnectionError" in one.store_error
    assert one.last_error is not None
    assert health.healthy
    assert not health.ready
    assert (alone.events_behind, alone.store_error is not None) == (None, True)


async def _ignore(stored: StoredEvent) -> None:
    pass


async def test_health_reads_no_event(postgres_url: str, schema: str) -> None:
    """Lag comes from positions: an event this process cannot decode (its type is not in the
    registry) does not make health raise, and health does not read the backlog."""
    from eventsource import DomainEvent, EventRegistry, PostgreSQLEventStore
    from eventsource.repositories import InMemoryCheckpointRepository

    elsewhere = EventRegistry()

    class Unknown(DomainEvent, registry=elsewhere):
        n: int

    writer = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=elsewhere)
    await writer.create_schema()
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    try:
        appended = await writer.append_events(uuid4(), "Thing", [Unknown(n=1), Unknown(n=2)], 0)
        async with asyncio.timeout(10):  # readable once older writers elsewhere have ended
            while await store.current_position() != appended.last_position:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        manager = SubscriptionManager(store, InMemoryCheckpointRepository(), config=CONFIG)
        manager.subscribe(_ignore, name="never-started")
        health = await manager.health()
    finally:
        await store.close()
        await writer.close()
    (one,) = health.subscriptions
    assert (one.state, one.events_behind, one.store_error) == (
        SubscriptionState.STARTING,
        2,
        None,
    )


async def test_health_names_a_writer_that_holds_the_feed_too_long(
    postgres_url: str, schema: str
) -> None:
    """A transaction that appended and stays open holds every reader back: past the
    manager's `horizon_threshold`, health is unhealthy and names its backend."""
    from sqlalchemy import text

    from eventsource import PostgreSQLEventStore
    from eventsource.repositories import InMemoryCheckpointRepository

    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    manager = SubscriptionManager(
        store, InMemoryCheckpointRepository(), config=CONFIG, horizon_threshold=0.2
    )
    manager.subscribe(_ignore, name="projector")
    try:
        assert (await manager.health()).healthy
        async with store.engine.connect() as conn:
            transaction = await conn.begin()
            await store.using(conn).append_events(uuid4(), "Thing", [Added(n=1)], 0)
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await asyncio.sleep(0.3)
            held = await manager.health()
            await transaction.commit()
        released = await manager.health()
    finally:
        await store.close()
    assert not held.healthy
    assert held.feed_blocked_by == pid
    assert held.feed_stuck_for is not None
    assert held.feed_stuck_for.total_seconds() > 0.2
    assert released.healthy
    assert released.feed_stuck_for is None
