"""Sagas on real PostgreSQL: the order saga fed by a subscription, a worker SIGKILLed in the
middle of a step, a deadline set before a restart firing after it, and 1,000 sagas driven
by two engine processes with every step exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from eventsource.locks.postgresql import PostgreSQLDistributedLock
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.sagas import PostgreSQLTimerStore, SagaStatus, WorkflowEngine, saga_id_for
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from tests.sagas._order import (
    Ledger,
    OrderPlaced,
    PaymentReceived,
    RequestPayment,
    ShipOrder,
    order_routes,
    order_saga,
)
from tests.sagas._sagas import Effects, sagas

pytestmark = pytest.mark.postgresql

ROOT = Path(__file__).resolve().parents[2]
PATIENCE = 120.0


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = PATIENCE) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 - polling other processes' progress
            await asyncio.sleep(0.1)


@dataclass
class Setup:
    url: str
    schema: str
    store: PostgreSQLEventStore
    timers: PostgreSQLTimerStore
    pool: Any
    effects: Effects

    def engine(self, **options: Any) -> WorkflowEngine:
        return WorkflowEngine(self.store, self.timers, sagas=sagas(self.effects), **options)

    async def status(self, saga_id: UUID) -> SagaStatus:
        engine = self.engine()
        return (await engine.get(saga_id)).status

    async def count(self, sql: str, *args: Any) -> int:
        return int(await self.pool.fetchval(sql.replace("{s}", f'"{self.schema}"'), *args))


@pytest.fixture
async def pg(postgres_url: str, schema: str) -> AsyncIterator[Setup]:
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema)
    await store.create_schema()
    timers = PostgreSQLTimerStore.for_store(store)
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=8)
    effects = Effects(pool, schema)
    await effects.create_tables()
    try:
        yield Setup(postgres_url, schema, store, timers, pool, effects)
    finally:
        await pool.close()
        await timers.close()
        await store.close()


async def start_worker(setup: Setup) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.sagas._worker",
        setup.url,
        setup.schema,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=None,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def stop(workers: list[asyncio.subprocess.Process]) -> None:
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            async with asyncio.timeout(30):
                await worker.wait()
        except TimeoutError:
            worker.kill()
            await worker.wait()


async def test_the_order_saga_runs_from_the_feed(pg: Setup) -> None:
    """OrderPlaced and PaymentReceived are appended to the store; a subscription feeds them
    to the process manager, the engine runs the steps; the commands are in the saga's
    stream, each once."""
    ledger = Ledger()
    saga = order_saga(ledger)
    locks = PostgreSQLDistributedLock.for_store(pg.store)
    engine = WorkflowEngine(pg.store, pg.timers, sagas=[saga], locks=locks, poll_interval=0.1)
    checkpoints = PostgreSQLCheckpointRepository(pg.store.engine, schema=pg.schema)
    manager = SubscriptionManager(
        pg.store, checkpoints, config=SubscriptionConfig(poll_interval=0.05)
    )
    routes = order_routes(engine, saga)
    manager.subscribe(routes)
    runner = asyncio.create_task(engine.run())
    try:
        await manager.start()
        order = OrderPlaced(order_id="pg-1", amount=12)
        await pg.store.append_events(UUID(int=1), "Order", [order], 0)
        saga_id = saga_id_for(saga, "pg-1")

        async def waiting() -> bool:
            state = await engine.get(saga_id) if await engine.repository.exists(saga_id) else None
            return state is not None and "request_payment" in state.completed

        await _until(waiting)
        await pg.store.append_events(
            UUID(int=1), "Order", [PaymentReceived(order_id="pg-1", payment_ref="p-1")], 1
        )

        async def completed() -> bool:
            return (await engine.get(saga_id)).status is SagaStatus.COMPLETED

        await _until(completed)
    finally:
        await manager.stop()
        engine.stop()
        await runner
        await engine.close()
        await locks.close()
        await checkpoints.close()
    events = [stored.event async for stored in pg.store.read_stream(saga_id)]
    commands = [type(e) for e in events if isinstance(e, RequestPayment | ShipOrder)]
    assert commands == [RequestPayment, ShipOrder]
    assert ledger.runs == {"reserve_stock": 1, "request_payment": 1, "ship": 1}


async def test_a_worker_killed_mid_step_is_taken_over(pg: Setup) -> None:
    """SIGKILL while step `two` runs: another engine re-runs it with the same key once the
    lock (the dead session's) and the timer's lease are gone, then completes one saga and
    compensates the other, every effect once."""
    starter = pg.engine()
    done_id = await starter.start("crash")
    undo_id = await starter.start("crash-undo")
    first = await start_worker(pg)
    second: asyncio.subprocess.Process | None = None
    try:

        async def both_in_step_two() -> bool:
            return await pg.count("SELECT count(*) FROM {s}.runs WHERE step = 'two'") == 2

        await _until(both_in_step_two)
        os.kill(first.pid, signal.SIGKILL)
        await first.wait()
        second = await start_worker(pg)

        async def finished() -> bool:
            statuses = {await pg.status(done_id), await pg.status(undo_id)}
            return statuses == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}

        await _until(finished)
    finally:
        await stop([first] + ([second] if second else []))
    runs = await pg.pool.fetch(
        f'SELECT saga_id, step, attempt, pid FROM "{pg.schema}".runs WHERE step = $1', "two"
    )
    assert sorted(r["attempt"] for r in runs) == [1, 1, 2, 2]  # re-run once each
    assert {r["pid"] for r in runs if r["attempt"] == 1} == {first.pid}
    assert second is not None
    assert {r["pid"] for r in runs if r["attempt"] == 2} == {second.pid}
    effects = await pg.pool.fetch(
        f'SELECT saga_id, step, count(*) AS n FROM "{pg.schema}".effects GROUP BY 1, 2'
    )
    by_step = {(r["saga_id"], r["step"]): r["n"] for r in effects}
    assert by_step == {
        (done_id, "one"): 1,
        (done_id, "two"): 1,
        (done_id, "three"): 1,
        (undo_id, "one"): 1,
        (undo_id, "two"): 1,
        (undo_id, "two undo"): 1,
        (undo_id, "one undo"): 1,
    }
    # crash-undo: `three` raised, so `two` and `one` were compensated, each once.
    state = await pg.engine().get(undo_id)
    assert state.compensated == ["two", "one"]
    assert await pg.count("SELECT count(*) FROM {s}.runs WHERE saga_id = $1", undo_id) == 6


async def test_a_deadline_set_before_a_restart_fires_after_it(pg: Setup) -> None:
    starter = pg.engine()
    worker = await start_worker(pg)
    saga_id = await starter.start("deadline")
    try:

        async def waiting() -> bool:
            return await pg.count("SELECT count(*) FROM {s}.runs WHERE step = 'ask'") == 1

        await _until(waiting)
    finally:
        await stop([worker])
    [timer] = [t for t in await pg.timers.pending(saga_id) if t.name == "timeout"]
    # No engine runs now; the deadline passes meanwhile.
    await asyncio.sleep(max(0.0, (timer.due_at - starter.clock()).total_seconds()) + 0.5)
    assert await pg.status(saga_id) is SagaStatus.RUNNING
    restarted = await start_worker(pg)
    try:

        async def compensated() -> bool:
            return await pg.status(saga_id) is SagaStatus.COMPENSATED

        await _until(compensated)
    finally:
        await stop([restarted])
    state = await pg.engine().get(saga_id)
    assert (state.reason or "").startswith("timed out")
    assert state.compensated == ["ask", "one"]
    assert await pg.timers.pending(saga_id) == []


SAGAS = 1_000


async def test_a_thousand_sagas_on_two_engines_run_every_step_once(pg: Setup) -> None:
    starter = pg.engine()
    gate = asyncio.Semaphore(16)

    async def start() -> UUID:
        async with gate:
            return await starter.start("bulk")

    ids = set(await asyncio.gather(*(start() for _ in range(SAGAS))))
    workers = [await start_worker(pg), await start_worker(pg)]
    try:

        async def all_completed() -> bool:
            return (
                await pg.count(
                    "SELECT count(*) FROM {s}.events WHERE event_type = $1",
                    "eventsource.saga.Completed",
                )
                == SAGAS
            )

        await _until(all_completed, 600)
    finally:
        await stop(workers)
    rows = await pg.pool.fetch(
        f'SELECT saga_id, step, count(*) AS n FROM "{pg.schema}".effects GROUP BY 1, 2'
    )
    assert len(rows) == SAGAS * 4
    assert {r["n"] for r in rows} == {1}  # no step ran twice
    assert {r["saga_id"] for r in rows} == ids
    pids = await pg.pool.fetch(f'SELECT DISTINCT pid FROM "{pg.schema}".effects')
    assert {r["pid"] for r in pids} == {w.pid for w in workers}  # both engines worked
