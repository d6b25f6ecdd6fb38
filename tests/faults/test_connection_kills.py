"""Connections killed with `pg_terminate_backend` every 0.2-0.5 s on the shared server while
writers append and a `DatabaseProjection` runs live (everything in the test's own schema; only
connections carrying the test's application_name are killed).

Writers retry an append that raised with the same events (appends are idempotent by event
id), and count an event as acknowledged only when its append returned. Required: acked =
stored = projected exactly once, every stream in order, no dead letter, no restart by hand.
With a backlog appended first, the projection catches up in full pages (a transaction of 50
events each) while its connections are killed.
"""

from __future__ import annotations

import asyncio
import random
from uuid import uuid4

import pytest

from eventsource import ExpectedVersion, PostgreSQLEventStore
from eventsource._internal.postgresql import create_engine
from eventsource.repositories import InMemoryDLQRepository
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.subscriptions import SubscriptionManager
from tests.faults._kill import BackendKiller
from tests.faults._model import (
    FAST,
    RETRY_TIMEOUT,
    Acked,
    Deposited,
    Ledger,
    caught_up,
    check_acked_equals_stored,
    check_exactly_once_in_order,
    feed,
    read_model,
    read_model_ddl,
    registry,
)

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]

WRITERS = 8
KILL_ROUNDS = 6
"""Writers keep appending until the killer has struck this many times (about 2 s)."""


async def _writer(
    store: PostgreSQLEventStore, killer: BackendKiller, acked: list[Acked], errors: list[str]
) -> None:
    account = uuid4()
    version = 0
    while killer.rounds < KILL_ROUNDS:
        version += 1
        event = Deposited(amount=version)
        expected = ExpectedVersion.NO_STREAM if version == 1 else version - 1
        while True:
            try:
                await store.append_events(account, "Account", [event], expected)
            except Exception as exc:  # retried with the same event: idempotent
                errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.01)
                continue
            acked.append((event.event_id, account, version))
            break
        await asyncio.sleep(random.uniform(0, 0.03))


async def _backlog(store: PostgreSQLEventStore, events: int, acked: list[Acked]) -> None:
    for _ in range(events // 10):
        account = uuid4()
        deposits = [Deposited(amount=n) for n in range(1, 11)]
        await store.append_events(account, "Account", deposits, ExpectedVersion.NO_STREAM)
        acked += [(d.event_id, account, n) for n, d in enumerate(deposits, 1)]


@pytest.mark.parametrize("backlog", [0, 2000])
async def test_killed_connections_lose_and_repeat_nothing(
    postgres_url: str, schema: str, backlog: int
) -> None:
    import asyncpg

    application = f"es-fault-{uuid4().hex[:12]}"
    connect_args = {"server_settings": {"application_name": application}}
    store = PostgreSQLEventStore.from_url(
        postgres_url,
        schema=schema,
        registry=registry,
        connect_args=connect_args,
        retry_timeout=RETRY_TIMEOUT,
    )
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    for statement in read_model_ddl(schema):
        await admin.execute(statement)
    engine = create_engine(postgres_url, pool_size=2, connect_args=connect_args)
    checkpoints = PostgreSQLCheckpointRepository(engine, schema=schema)
    dead_letters = InMemoryDLQRepository()
    ledger = Ledger(engine, checkpoints, schema)
    acked: list[Acked] = []
    errors: list[str] = []
    killer = BackendKiller(postgres_url, application_name=application)
    try:
        await _backlog(store, backlog, acked)
        async with SubscriptionManager(store, checkpoints, dead_letters, config=FAST) as manager:
            subscription = manager.subscribe(ledger)
            async with killer.running():
                await asyncio.gather(
                    *(_writer(store, killer, acked, errors) for _ in range(WRITERS))
                )
            stored = await feed(postgres_url, schema)
            check_acked_equals_stored(acked, stored)  # the store first
            await caught_up(subscription, stored[-1][3] if stored else None)
        count, applied = await read_model(admin, schema)
    finally:
        await checkpoints.close()
        await engine.dispose()
        await store.close()
        await admin.close()
    assert killer.kills > 0
    check_exactly_once_in_order(count, applied, stored)
    assert await dead_letters.count() == 0
