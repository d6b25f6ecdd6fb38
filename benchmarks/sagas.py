"""Saga steps per second: the library's WorkflowEngine against a hand-written loop doing the
same durable work with raw asyncpg, in the same run.

    uv run python benchmarks/sagas.py            # 300 sagas of 3 steps, 3 rounds
    uv run python benchmarks/sagas.py --quick    # 60 sagas, 1 round

Both sides start N sagas (a saga record and a wake-up timer), then drive them 8 at a time:
claim due timers (`FOR UPDATE SKIP LOCKED`, a lease), take the saga's advisory lock, and for
each step record "started", run the action (one INSERT of an effect row) and record
"completed", then record the end and delete the timer. The library records each move as an
event appended to the saga's stream (optimistic concurrency) and rebuilds the saga from it;
the hand-written loop updates one row per saga. The ratio is the price of the event-sourced
record (a readable history, commands in the same append, the state machine) over the
simplest durable loop.
Environment: EVENTSOURCE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta
from uuid import UUID, uuid4

import asyncpg
from _common import URL, Result, interleave, load_average, print_table

from eventsource.locks.postgresql import PostgreSQLDistributedLock
from eventsource.sagas import PostgreSQLTimerStore, Saga, SagaStep, StepContext, WorkflowEngine
from eventsource.stores.postgresql import PostgreSQLEventStore

STEPS = 3
CONCURRENCY = 8


class RawSagas:
    """The hand-written design: a row per saga, a timer table, an advisory lock."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        s = f'"{schema}"'
        self.setup = [
            f"CREATE TABLE {s}.raw_sagas (id uuid PRIMARY KEY, status text NOT NULL,"
            " step int NOT NULL DEFAULT 0, started int, data jsonb NOT NULL)",
            f"CREATE TABLE {s}.raw_timers (saga_id uuid PRIMARY KEY, due_at timestamptz NOT NULL,"
            " claimed_until timestamptz)",
            f"CREATE INDEX ON {s}.raw_timers (due_at)",
        ]
        self.insert = f"INSERT INTO {s}.raw_sagas (id, status, data) VALUES ($1, 'PENDING', '{{}}')"
        self.timer = f"INSERT INTO {s}.raw_timers (saga_id, due_at) VALUES ($1, now())"
        self.claim = (
            f"WITH c AS (SELECT saga_id FROM {s}.raw_timers WHERE due_at <= now() AND"
            " (claimed_until IS NULL OR claimed_until <= now()) ORDER BY due_at LIMIT $1"
            f" FOR UPDATE SKIP LOCKED) UPDATE {s}.raw_timers t SET claimed_until = now()"
            " + interval '30 seconds' FROM c WHERE t.saga_id = c.saga_id RETURNING t.saga_id"
        )
        self.load = f"SELECT status, step FROM {s}.raw_sagas WHERE id = $1"
        self.started = f"UPDATE {s}.raw_sagas SET status = 'RUNNING', started = $2 WHERE id = $1"
        self.completed = f"UPDATE {s}.raw_sagas SET step = $2, started = NULL WHERE id = $1"
        self.done = f"UPDATE {s}.raw_sagas SET status = 'COMPLETED' WHERE id = $1"
        self.delete = f"DELETE FROM {s}.raw_timers WHERE saga_id = $1"
        self.effect = f"INSERT INTO {s}.effects (saga_id, step) VALUES ($1, $2)"

    async def start(self, saga_id: UUID) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(self.timer, saga_id)
            await conn.execute(self.insert, saga_id)

    async def drive_all(self) -> None:
        while True:
            async with self.pool.acquire() as conn:
                claimed = [r[0] for r in await conn.fetch(self.claim, CONCURRENCY)]
            if not claimed:
                return
            await asyncio.gather(*(self.drive(saga_id) for saga_id in claimed))

    async def drive(self, saga_id: UUID) -> None:
        key = hash(saga_id) & 0x7FFF_FFFF_FFFF_FFFF
        async with self.pool.acquire() as lock:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1)", key):
                return
            try:
                async with self.pool.acquire() as conn:
                    _, step = await conn.fetchrow(self.load, saga_id)
                    while step < STEPS:
                        await conn.execute(self.started, saga_id, step)
                        await conn.execute(self.effect, saga_id, f"s{step}")
                        step += 1
                        await conn.execute(self.completed, saga_id, step)
                    await conn.execute(self.done, saga_id)
                    await conn.execute(self.delete, saga_id)
            finally:
                await lock.fetchval("SELECT pg_advisory_unlock($1)", key)


async def run(quick: bool) -> None:
    sagas_per_round = 60 if quick else 300
    repeats = 1 if quick else 3
    schema = f"bench_sagas_{uuid4().hex[:8]}"
    admin = await asyncpg.connect(URL)
    pool = await asyncpg.create_pool(URL, min_size=CONCURRENCY, max_size=2 * CONCURRENCY + 4)
    store = PostgreSQLEventStore.from_url(URL, schema=schema)
    await store.create_schema()
    timers = PostgreSQLTimerStore.for_store(store)
    locks = PostgreSQLDistributedLock.from_url(URL, namespace=schema, pool_size=CONCURRENCY + 2)
    raw = RawSagas(pool, schema)
    try:
        await admin.execute(f'CREATE TABLE "{schema}".effects (saga_id uuid, step text)')
        for statement in raw.setup:
            await admin.execute(statement)

        async def effect(ctx: StepContext) -> None:
            await pool.execute(raw.effect, ctx.saga_id, ctx.step)

        saga = Saga("bench", [SagaStep(effect, name=f"s{n}") for n in range(STEPS)])
        engine = WorkflowEngine(
            store,
            timers,
            sagas=[saga],
            locks=locks,
            max_concurrent=CONCURRENCY,
            lease=timedelta(seconds=30),
        )

        async def library() -> float:
            began = time.perf_counter()
            for _ in range(sagas_per_round):
                await engine.start(saga)
            await engine.run_until_idle()
            return sagas_per_round * STEPS / (time.perf_counter() - began)

        async def hand_written() -> float:
            began = time.perf_counter()
            for _ in range(sagas_per_round):
                await raw.start(uuid4())
            await raw.drive_all()
            return sagas_per_round * STEPS / (time.perf_counter() - began)

        await library()  # warm up both sides
        await hand_written()
        lib, hand = await interleave(repeats, library, hand_written)
        print(f"{sagas_per_round} sagas x {STEPS} steps per round, {repeats} rounds")
        print_table(
            "Saga steps per second (start + drive, 8 sagas at a time)",
            [Result("saga steps", "steps/s", lib, hand, "-")],
        )
        print("\n(raw asyncpg = the hand-written loop of the same database work)")
        print(f"load average: {load_average()}")
        completed = await admin.fetchval(
            f'SELECT count(*) FROM "{schema}".events WHERE event_type = $1',
            "eventsource.saga.Completed",
        )
        effects = await admin.fetchval(f'SELECT count(*) FROM "{schema}".effects')
        expected_sagas = sagas_per_round * (repeats + 1)
        assert completed == expected_sagas, (completed, expected_sagas)
        assert effects == 2 * expected_sagas * STEPS, effects
        await engine.close()
    finally:
        await locks.close()
        await timers.close()
        await store.close()
        await pool.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sagas, one round")
    args = parser.parse_args()
    print(f"load average: {load_average()}")
    asyncio.run(run(args.quick))


if __name__ == "__main__":
    main()
