"""Lost COMMIT replies: the server commits, the client never hears of it, the work is retried.

A `DatabaseProjection` behind the proxy must apply each event once although the proxy drops
the reply to every 5th COMMIT of one-event pages, every 3rd of 7-event pages (issue item 4:
before the fix, each dropped reply was one more effect). The inbox, used inside the handler's
transaction, must do the same.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from uuid import UUID, uuid4

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventsource import ExpectedVersion, PostgreSQLEventStore
from eventsource._internal.postgresql import create_engine
from eventsource.exceptions import StoreConnectionError
from eventsource.outbox import InboxHandler, PostgreSQLInboxRepository
from eventsource.repositories import InMemoryDLQRepository
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.subscriptions import SubscriptionManager
from tests.faults._cluster import ThrowawayCluster
from tests.faults._model import (
    FAST,
    Deposited,
    Ledger,
    caught_up,
    check_exactly_once_in_order,
    read_model,
    read_model_ddl,
    registry,
)
from tests.faults._proxy import PostgresProxy

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]

EVENTS = 100
SCHEMA = "es"


async def _append_all(store: PostgreSQLEventStore) -> list[tuple[UUID, UUID, int]]:
    stored = []
    accounts = [uuid4() for _ in range(10)]
    for version in range(1, EVENTS // len(accounts) + 1):
        for account in accounts:
            event = Deposited(amount=version)
            expected = ExpectedVersion.NO_STREAM if version == 1 else version - 1
            await store.append_events(account, "Account", [event], expected)
            stored.append((event.event_id, account, version))
    return stored


@dataclass
class _Projected:
    """A store on the cluster, a read model, and a `Ledger` projection whose engine goes
    through the reply-dropping proxy."""

    store: PostgreSQLEventStore
    admin: asyncpg.Connection
    engine: AsyncEngine
    checkpoints: PostgreSQLCheckpointRepository
    ledger: Ledger


@contextlib.asynccontextmanager
async def _projected(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> AsyncIterator[_Projected]:
    store = PostgreSQLEventStore.from_url(
        cluster.url(cluster_database), schema=SCHEMA, registry=registry
    )
    await store.create_schema()
    admin = await asyncpg.connect(cluster.url(cluster_database))
    for statement in read_model_ddl("read"):
        await admin.execute(statement)
    engine = create_engine(proxy.url(cluster_database), pool_size=2)
    checkpoints = PostgreSQLCheckpointRepository(engine, schema=SCHEMA)
    try:
        yield _Projected(store, admin, engine, checkpoints, Ledger(engine, checkpoints, "read"))
    finally:
        proxy.drop_every = 0
        await checkpoints.close()
        await engine.dispose()
        await store.close()
        await admin.close()


@pytest.mark.parametrize(("batch_size", "drop_every"), [(1, 5), (7, 3)])
async def test_database_projection_applies_each_event_once_when_commit_replies_are_lost(
    cluster: ThrowawayCluster,
    cluster_database: str,
    proxy: PostgresProxy,
    batch_size: int,
    drop_every: int,
) -> None:
    dead_letters = InMemoryDLQRepository()
    async with _projected(cluster, cluster_database, proxy) as world:
        stored = await _append_all(world.store)
        last = await world.store.current_position()
        proxy.drop_every = drop_every
        ledger = world.ledger
        config = replace(FAST, batch_size=batch_size)
        async with SubscriptionManager(
            world.store, world.checkpoints, dead_letters, config=config
        ) as manager:
            subscription = manager.subscribe(ledger)
            await caught_up(subscription, last)
        count, applied = await read_model(world.admin, "read")
    # the fault did happen, many times (a page is a transaction)
    assert proxy.dropped >= math.ceil(EVENTS / batch_size) // drop_every - 1
    assert await dead_letters.count() == 0
    check_exactly_once_in_order(count, applied, stored)
    # The events of a page whose reply was lost are recognised as applied: by the
    # subscription, which resumes from the committed checkpoint after the outage, or by the
    # next page's transaction, which reads the locked checkpoint (`already_applied`).
    assert ledger.already_applied <= proxy.dropped * batch_size


async def test_inbox_in_the_handlers_transaction_applies_each_event_once(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> None:
    """`inbox.using(conn).record(...)` before the effect, in one transaction: a retry after a
    lost COMMIT reply finds the record and skips the effect."""
    admin = await asyncpg.connect(cluster.url(cluster_database))
    for statement in read_model_ddl("read"):
        await admin.execute(statement)
    engine = create_engine(proxy.url(cluster_database), pool_size=2)
    inbox = PostgreSQLInboxRepository(engine, schema=SCHEMA)
    await inbox.create_schema()
    events = [Deposited(aggregate_id=uuid4(), aggregate_version=1, amount=n) for n in range(60)]
    attempts = 0
    try:
        proxy.drop_every = 5
        for event in events:
            while True:  # what a bus does with a handler that raised: deliver again
                attempts += 1
                try:
                    async with engine.begin() as conn:
                        await _consume(conn, inbox, event)
                    break
                except Exception:
                    continue
        count, applied = await read_model(admin, "read")
    finally:
        proxy.drop_every = 0
        await inbox.close()
        await engine.dispose()
        await admin.close()
    assert proxy.dropped >= 60 // 5 - 1
    assert attempts == len(events) + proxy.dropped
    stored = [(e.event_id, e.aggregate_id, 1) for e in events]
    check_exactly_once_in_order(count, applied, stored)


async def _consume(
    conn: AsyncConnection, inbox: PostgreSQLInboxRepository, event: Deposited
) -> None:
    if await inbox.using(conn).record("ledger", event.event_id):
        await conn.execute(text('UPDATE "read".counter SET n = n + 1'))
        await conn.execute(
            text('INSERT INTO "read".applied (event_id, aggregate_id, version) VALUES (:e, :a, 1)'),
            {"e": event.event_id, "a": event.aggregate_id},
        )


async def test_inbox_handler_runs_the_handler_once_when_record_replies_are_lost(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> None:
    """`InboxHandler` records after the handler, outside any transaction of the handler: the
    proxy drops the answer to every 3rd record (an autocommit INSERT, made all the same). The
    handler retries the record, finds it made, and neither fails the delivery nor runs the
    handler again."""
    engine = create_engine(proxy.url(cluster_database), pool_size=2)
    inbox = PostgreSQLInboxRepository(engine, schema=SCHEMA)
    await inbox.create_schema()
    effects: list[UUID] = []
    handler = InboxHandler(
        lambda event: effects.append(event.event_id), inbox, "ledger", retry_base=0.001
    )
    events = [Deposited(aggregate_id=uuid4(), aggregate_version=1, amount=n) for n in range(30)]
    failed_deliveries = 0
    try:
        proxy.drop_tag, proxy.drop_every = "INSERT", 3
        for event in events:
            while True:  # what a bus does with a handler that raised: deliver again
                try:
                    await handler.handle(event)
                    break
                except Exception:
                    failed_deliveries += 1
        for event in events:  # a redelivery of everything: all dropped
            await handler.handle(event)
    finally:
        proxy.drop_every = 0
        await inbox.close()
        await engine.dispose()
    assert proxy.dropped >= len(events) // 3  # retried records are INSERTs too
    assert failed_deliveries == 0
    assert effects == [event.event_id for event in events]
    assert (handler.processed, handler.duplicates) == (len(events), len(events))


async def test_database_projection_recognises_a_lost_first_commit(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> None:
    """The very first event's COMMIT reply is lost (no checkpoint row existed before it): the
    failure is a `StoreConnectionError`, the redelivery is recognised, and a later event and a
    dead-letter-style replay of an earlier one are applied as usual."""
    async with _projected(cluster, cluster_database, proxy) as world:
        ledger = world.ledger
        await _append_all(world.store)
        first, second, third = [s async for s in world.store.read_all()][:3]
        proxy.drop_every = 1
        with pytest.raises(StoreConnectionError, match="Ledger"):
            await ledger.handle(first)
        proxy.drop_every = 0
        await ledger.handle(first)  # committed already: skipped
        assert ledger.already_applied == 1
        await ledger.handle(third)
        await ledger.handle(second)  # behind the checkpoint, not in doubt: applied
        count, applied = await read_model(world.admin, "read")
        checkpoint = await world.checkpoints.get(ledger.name)
    assert count == 3
    assert [event_id for event_id, _, _ in applied] == [
        first.event_id,
        third.event_id,
        second.event_id,
    ]
    assert checkpoint is not None
    assert checkpoint.position == third.position


async def test_database_projection_recognises_a_lost_first_batch_commit(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> None:
    """The very first page's COMMIT reply is lost (no checkpoint row existed before it): the
    failure is a `StoreConnectionError`; the next page, which starts with the same events,
    skips them and applies the rest; the checkpoint counts each event once."""
    async with _projected(cluster, cluster_database, proxy) as world:
        ledger = world.ledger
        await _append_all(world.store)
        events = [s async for s in world.store.read_all()][:5]
        proxy.drop_every = 1
        with pytest.raises(StoreConnectionError, match="a batch of 3 events"):
            await ledger.handle_batch(events[:3], processed=3)
        proxy.drop_every = 0
        await ledger.handle_batch(events, processed=5)
        count, applied = await read_model(world.admin, "read")
        checkpoint = await world.checkpoints.get(ledger.name)
    assert proxy.dropped == 1
    assert ledger.already_applied == 3
    assert count == 5
    assert [event_id for event_id, _, _ in applied] == [s.event_id for s in events]
    assert checkpoint is not None
    assert (checkpoint.position, checkpoint.event_id) == (events[-1].position, events[-1].event_id)
    assert checkpoint.events_processed == 5


async def test_unit_of_work_retried_after_a_lost_commit_stores_its_events_once(
    cluster: ThrowawayCluster, cluster_database: str, proxy: PostgresProxy
) -> None:
    """A caller's transaction appending through `store.using(conn)` (with the outbox) and
    retried with the same events after its COMMIT reply was lost: the retry's append is
    recognised as the same append, so events and outbox rows are stored once."""
    engine = create_engine(proxy.url(cluster_database), pool_size=2)
    store = PostgreSQLEventStore(engine, schema=SCHEMA, registry=registry, outbox=True)
    await store.create_schema()
    units = [(uuid4(), [Deposited(amount=n), Deposited(amount=-n)]) for n in range(30)]
    results = []
    attempts = 0
    try:
        proxy.drop_every = 3
        for account, events in units:
            while True:
                attempts += 1
                try:
                    async with engine.begin() as conn:
                        result = await store.using(conn).append_events(
                            account, "Account", events, ExpectedVersion.NO_STREAM
                        )
                    break
                except Exception:
                    continue  # the same unit of work again, with the same events
            results.append(result)
    finally:
        proxy.drop_every = 0
        await store.close()
        await engine.dispose()
    admin = await asyncpg.connect(cluster.url(cluster_database))
    try:
        stored = await admin.fetch(f'SELECT event_id FROM "{SCHEMA}".events')
        queued = await admin.fetch(f'SELECT event_id FROM "{SCHEMA}".outbox')
    finally:
        await admin.close()
    assert proxy.dropped >= len(units) // 3
    assert attempts == len(units) + proxy.dropped
    expected = sorted(str(e.event_id) for _, events in units for e in events)
    assert sorted(str(r[0]) for r in stored) == expected
    assert sorted(str(r[0]) for r in queued) == expected
    assert [r.new_version for r in results] == [2] * len(units)
    assert sum(r.already_stored for r in results) == proxy.dropped  # each retry recognised
