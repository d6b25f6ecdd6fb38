"""Several processes run the same subscription: one at a time, and a killed holder is
replaced from its checkpoint without losing an event."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions.postgresql import lease_key
from tests.subscriptions._worker import Tick, registry

pytestmark = pytest.mark.postgresql

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 400


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 - polling another process's progress
            await asyncio.sleep(0.05)


async def start_worker(url: str, schema: str, mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.subscriptions._worker",
        url,
        schema,
        mode,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=None,  # warnings ("lease lost; standing by") land in the test's captured output
    )


async def stop_workers(workers: list[asyncio.subprocess.Process]) -> list[int]:
    """SIGTERM (a graceful stop) to the live ones; their exit codes, in order."""
    for worker in workers:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
    codes = []
    for worker in workers:
        try:
            async with asyncio.timeout(30):
                codes.append(await worker.wait())
        except TimeoutError:
            worker.kill()
            codes.append(await worker.wait())
    return codes


async def test_killed_holder_is_replaced_and_no_event_is_lost(postgres_url: str) -> None:
    schema = f"es_proc_{uuid4().hex[:12]}"
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    workers: list[asyncio.subprocess.Process] = []
    try:
        await admin.execute(
            f'CREATE TABLE "{schema}".handled (seq bigserial PRIMARY KEY, event_id uuid, pid int,'
            " aggregate_id uuid, n int)"
        )
        appended: set[UUID] = set()
        for batch in range(EVENTS // 10):
            ticks = [Tick(n=batch * 10 + k) for k in range(10)]
            await store.append_events(uuid4(), "Clock", ticks, 0)
            appended.update(t.event_id for t in ticks)

        workers += [await start_worker(postgres_url, schema, "record") for _ in range(3)]

        async def handled() -> int:
            return int(await admin.fetchval(f'SELECT count(*) FROM "{schema}".handled'))

        async def some_handled() -> bool:
            return await handled() >= EVENTS // 4

        await _until(some_handled, 60)
        holder = int(
            await admin.fetchval(f'SELECT pid FROM "{schema}".handled ORDER BY seq DESC LIMIT 1')
        )
        os.kill(holder, signal.SIGKILL)  # mid-batch: no chance to save or release anything

        async def all_handled() -> bool:
            distinct = await admin.fetchval(
                f'SELECT count(DISTINCT event_id) FROM "{schema}".handled'
            )
            return int(distinct) == EVENTS

        await _until(all_handled, 90)
        rows = await admin.fetch(f'SELECT event_id, pid FROM "{schema}".handled ORDER BY seq')
    finally:
        exit_codes = await stop_workers(workers)
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
        await store.close()

    ids = [row[0] for row in rows]
    assert set(ids) == appended, "an event was never handled"
    # checkpoints after every event: only the event in flight at the kill can run twice
    assert len(ids) - len(set(ids)) <= 1
    pids = [row[1] for row in rows]
    runs = [pid for i, pid in enumerate(pids) if i == 0 or pids[i - 1] != pid]
    assert len(runs) == 2, f"the subscription ran in more than one process at a time: {runs}"
    assert runs[0] == holder
    survivors = [
        code for worker, code in zip(workers, exit_codes, strict=True) if worker.pid != holder
    ]
    assert survivors == [0, 0], "the surviving workers did not shut down gracefully"


async def test_database_projection_applies_each_event_once_across_a_kill(
    postgres_url: str,
) -> None:
    """The handler's effect (a running total, not idempotent) and the checkpoint commit in one
    transaction: the holder killed in the middle of one loses that transaction, the standby
    re-delivers the event, and every event is counted exactly once."""
    schema = f"es_proc_{uuid4().hex[:12]}"
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    workers: list[asyncio.subprocess.Process] = []
    try:
        await admin.execute(
            f'CREATE TABLE "{schema}".totals (total bigint NOT NULL, applied int NOT NULL)'
        )
        await admin.execute(f'INSERT INTO "{schema}".totals VALUES (0, 0)')
        for batch in range(EVENTS // 10):
            ticks = [Tick(n=batch * 10 + k) for k in range(10)]
            await store.append_events(uuid4(), "Clock", ticks, 0)
        workers += [await start_worker(postgres_url, schema, "database") for _ in range(2)]

        async def applied() -> int:
            return int(await admin.fetchval(f'SELECT applied FROM "{schema}".totals'))

        async def some_applied() -> bool:
            return await applied() >= EVENTS // 4

        await _until(some_applied, 60)
        key = lease_key("Totals", f"{schema}.")
        holder = await admin.fetchval(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.classid::bigint = $1 AND l.objid::bigint = $2",
            (key >> 32) & 0xFFFFFFFF,
            key & 0xFFFFFFFF,
        )
        assert holder is not None, "no process holds the lease"
        os.kill(int(holder.removeprefix("worker-")), signal.SIGKILL)

        async def all_applied() -> bool:
            return await applied() >= EVENTS

        await _until(all_applied, 90)
        await asyncio.sleep(0.5)  # would a duplicate still arrive?
        total, count = await admin.fetchrow(f'SELECT total, applied FROM "{schema}".totals')
    finally:
        await stop_workers(workers)
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
        await store.close()
    assert count == EVENTS, "an event's effect was applied twice, or not at all"
    assert total == sum(range(EVENTS))


async def test_partitions_spread_over_processes_and_move_when_one_dies(
    postgres_url: str,
) -> None:
    """4 partitions, 2 workers taking at most 2 each: both work, every aggregate is handled
    by one process in order; after one is killed the other takes its partitions over."""
    schema = f"es_proc_{uuid4().hex[:12]}"
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=registry)
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    workers: list[asyncio.subprocess.Process] = []
    aggregates = [uuid4() for _ in range(16)]

    async def append_round(round_: int) -> None:
        for aggregate in aggregates:
            await store.append_events(aggregate, "Clock", [Tick(n=round_)], round_)

    async def distinct(where: str = "TRUE") -> int:
        sql = f'SELECT count(DISTINCT event_id) FROM "{schema}".handled WHERE {where}'
        return int(await admin.fetchval(sql))

    try:
        await admin.execute(
            f'CREATE TABLE "{schema}".handled (seq bigserial PRIMARY KEY, event_id uuid,'
            " pid int, aggregate_id uuid, n int)"
        )
        for round_ in range(10):
            await append_round(round_)
        workers += [await start_worker(postgres_url, schema, "partitioned") for _ in range(2)]

        async def first_rounds_done() -> bool:
            return await distinct() == 160

        await _until(first_rounds_done, 60)
        before = await admin.fetch(
            f'SELECT aggregate_id, pid, n FROM "{schema}".handled ORDER BY seq'
        )
        victim = workers[0]
        victim.kill()
        await victim.wait()
        for round_ in range(10, 15):
            await append_round(round_)

        async def all_done() -> bool:
            return await distinct() == 240

        await _until(all_done, 90)
        after = await admin.fetch(
            f'SELECT aggregate_id, pid, n FROM "{schema}".handled WHERE n >= 10 ORDER BY seq'
        )
    finally:
        await stop_workers(workers)
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
        await store.close()

    assert {row[1] for row in before} == {w.pid for w in workers}, "both processes worked"
    for aggregate in aggregates:
        mine = [row for row in before if row[0] == aggregate]
        # A partition may change hands mid-run (a failed lease check, or a partition that
        # stops, does it): the handover saves the checkpoint first, so the aggregate's events
        # are still handled once each and in order across the processes.
        assert [row[2] for row in mine] == list(range(10)), "an aggregate lost its order"
        owners = [row[1] for row in mine]
        changes = sum(1 for a, b in itertools.pairwise(owners) if a != b)
        assert changes <= 1, "an aggregate went back and forth between processes"
    assert {row[1] for row in after} == {workers[1].pid}, "the survivor took everything over"
    for aggregate in aggregates:
        assert [row[2] for row in after if row[0] == aggregate] == list(range(10, 15))
