"""The throw-away cluster restarted (`-m fast`: sessions rolled back and closed; `-m
immediate`: a crash, then recovery) while writers run commands through
`AggregateRepository.execute` and a `DatabaseProjection` runs live.

A writer counts a command as acknowledged when `execute` returned. Required: the store's
retry budget carries each command over the restart (the same events are re-sent: appends are
idempotent), so acked = stored = projected exactly once, every stream in order, no dead
letter, and nobody restarts anything by hand. A command that raises is recorded and run again
by the writer, which would store an unacknowledged event if its first append had committed:
that shows as "stored events were never acknowledged".
"""

from __future__ import annotations

import asyncio
import random
from typing import Literal
from uuid import uuid4

import pytest

from eventsource import AggregateRepository, PostgreSQLEventStore
from eventsource._internal.postgresql import create_engine
from eventsource.exceptions import StoreConnectionError
from eventsource.repositories import InMemoryDLQRepository
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.subscriptions import SubscriptionManager
from tests.faults._cluster import ThrowawayCluster
from tests.faults._model import (
    FAST,
    RETRY_TIMEOUT,
    Account,
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

WRITERS = 6
RESTARTS = 3
SCHEMA = "es"


async def _writer(
    repository: AggregateRepository[Account],
    done: asyncio.Event,
    acked: list[Acked],
    errors: list[str],
) -> None:
    account = uuid4()
    created = False
    while not done.is_set():
        applied: list[Acked] = []

        def deposit(aggregate: Account, applied: list[Acked] = applied) -> None:
            aggregate.deposit(1)
            event = aggregate.uncommitted_events[-1]
            applied[:] = [(event.event_id, account, event.aggregate_version)]

        try:
            await repository.execute(account, deposit, create=not created)
        except Exception as exc:  # noted, and the command runs again
            errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.02)
            continue
        created = True
        acked.extend(applied)
        await asyncio.sleep(random.uniform(0, 0.02))


async def _restarts(cluster: ThrowawayCluster, mode: Literal["fast", "immediate"]) -> None:
    for _ in range(RESTARTS):
        await asyncio.sleep(random.uniform(0.3, 0.6))
        await asyncio.to_thread(cluster.restart, mode)
    await asyncio.sleep(0.3)  # writers keep going on the restarted server


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_restarted_server_loses_and_repeats_nothing(
    cluster: ThrowawayCluster, cluster_database: str, mode: Literal["fast", "immediate"]
) -> None:
    import asyncpg

    url = cluster.url(cluster_database)
    store = PostgreSQLEventStore.from_url(
        url, schema=SCHEMA, registry=registry, retry_timeout=RETRY_TIMEOUT
    )
    await store.create_schema()
    admin = await asyncpg.connect(url)
    for statement in read_model_ddl("read"):
        await admin.execute(statement)
    await admin.close()
    engine = create_engine(url, pool_size=2)
    checkpoints = PostgreSQLCheckpointRepository(engine, schema=SCHEMA)
    dead_letters = InMemoryDLQRepository()
    repository = AggregateRepository(store, Account)
    acked: list[Acked] = []
    errors: list[str] = []
    done = asyncio.Event()
    try:
        async with SubscriptionManager(store, checkpoints, dead_letters, config=FAST) as manager:
            subscription = manager.subscribe(Ledger(engine, checkpoints, "read"))
            writers = [
                asyncio.create_task(_writer(repository, done, acked, errors))
                for _ in range(WRITERS)
            ]
            try:
                await _restarts(cluster, mode)
            finally:
                done.set()
                await asyncio.gather(*writers)
            # the store first: what writers were told is what is stored, and they were told
            stored = await feed(url, SCHEMA)
            check_acked_equals_stored(acked, stored)
            assert not errors, f"{len(errors)} commands failed, first: {errors[0]}"
            await caught_up(subscription, stored[-1][3] if stored else None)
        admin = await asyncpg.connect(url)
        try:
            count, applied = await read_model(admin, "read")
        finally:
            await admin.close()
    finally:
        await checkpoints.close()
        await engine.dispose()
        await store.close()
    assert len(acked) > WRITERS  # writers made progress around the restarts
    check_exactly_once_in_order(count, applied, stored)
    assert await dead_letters.count() == 0


async def test_database_projection_reports_a_stopped_server_as_a_lost_connection(
    cluster: ThrowawayCluster, cluster_database: str
) -> None:
    """An infrastructure fault, typed so that subscriptions can tell it from a poison event."""
    url = cluster.url(cluster_database)
    store = PostgreSQLEventStore.from_url(url, schema=SCHEMA, registry=registry)
    await store.create_schema()
    await store.append_events(uuid4(), "Account", [Deposited(amount=1)], 0)
    (stored,) = [s async for s in store.read_all()]
    await store.close()
    engine = create_engine(url, pool_size=1)
    checkpoints = PostgreSQLCheckpointRepository(engine, schema=SCHEMA)
    try:
        cluster.stop("immediate")
        try:
            with pytest.raises(StoreConnectionError, match="Ledger"):
                await Ledger(engine, checkpoints, "read").handle(stored)
        finally:
            cluster.start()
    finally:
        await checkpoints.close()
        await engine.dispose()


async def test_events_tail_follows_across_a_server_outage_longer_than_the_retry_budget(
    cluster: ThrowawayCluster, cluster_database: str
) -> None:
    """`eventsource events tail --follow` on a store whose retry budget (0.3 s) is far
    shorter than the outage (the server stopped for 3 s): it reports the lost connection on
    stderr, keeps retrying, and once the server is back shows every event exactly once."""
    import json
    import signal
    import sys

    url = cluster.url(cluster_database)
    store = PostgreSQLEventStore.from_url(url, schema=SCHEMA, registry=registry)
    await store.create_schema()
    account = uuid4()
    await store.append_events(account, "Account", [Deposited(amount=1)], 0)
    await store.close()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "eventsource", "events", "tail", "--follow", "--json"),
        *("--from-start", "--url", f"{url}?schema={SCHEMA}&retry_timeout=0.3"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    amounts: list[int] = []
    report = ""
    try:
        async with asyncio.timeout(90):
            amounts.append(json.loads(await process.stdout.readline())["payload"]["amount"])
            cluster.stop("fast")
            try:
                # The library's own warnings (LISTEN lost, ...) may come first.
                while "retrying in" not in report:
                    line = await process.stderr.readline()
                    assert line, f"stderr ended: {report}"
                    report += line.decode()
                await asyncio.sleep(3)
            finally:
                cluster.start()
            store = PostgreSQLEventStore.from_url(url, schema=SCHEMA, registry=registry)
            try:
                for version in range(1, 4):
                    event = Deposited(amount=version + 1)
                    await store.append_events(account, "Account", [event], version)
            finally:
                await store.close()
            while len(amounts) < 4:
                amounts.append(json.loads(await process.stdout.readline())["payload"]["amount"])
    finally:
        if not cluster.running:
            cluster.start()
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, errors = await process.communicate()
    assert "retrying in" in report, report
    assert amounts == [1, 2, 3, 4]
    assert rest == b""  # nothing shown twice after the reconnection
    assert process.returncode == 130, errors.decode()
