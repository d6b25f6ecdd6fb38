"""Processes SIGKILLed again and again while events keep coming: subscription workers that
share one subscription through PostgreSQL leases.

A SIGKILL gives the victim no chance to save, release or mark anything; each victim is
replaced by a fresh process (what a supervisor does), and no survivor is ever restarted.
Required: every acknowledged event's effect, each aggregate in version order; exactly once
where the design promises it (`DatabaseProjection`),
at least once otherwise, with at most the event in flight at a kill handled twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar
from uuid import UUID, uuid4

import pytest

from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions.postgresql import lease_key
from tests.faults._model import Acked
from tests.subscriptions._worker import Tick
from tests.subscriptions._worker import registry as tick_registry

pytestmark = [pytest.mark.faults, pytest.mark.postgresql]

ROOT = Path(__file__).resolve().parents[2]
CATCH_UP_SECONDS = 30.0
"""How long the survivors may take to handle what is left once the kills stop (generous)."""

Process = asyncio.subprocess.Process


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(CATCH_UP_SECONDS):
            while not await condition():  # noqa: ASYNC110 - polling other processes' progress
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {CATCH_UP_SECONDS} s: {what}") from None


class Child:
    """A worker process that prints `ready` once it runs; reads what it prints."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, module: str, *args: str) -> Self:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # warnings ("lease lost; standing by") land in the captured output
        )
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.startswith(b"ready"):
                self.ready.set()
            else:
                self.said(line)

    def said(self, line: bytes) -> None:
        """A line other than `ready`."""

    async def kill(self) -> None:
        if self.alive:
            self.process.kill()
        await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def stop(self) -> int:
        """A graceful stop once it runs (SIGTERM); its exit code."""
        try:
            async with asyncio.timeout(30):
                await self.ready.wait()
                self.process.send_signal(signal.SIGTERM)
                return await self.process.wait()
        except TimeoutError:
            await self.kill()
            return -1
        finally:
            await self.kill()


C = TypeVar("C", bound=Child)


async def _any_ready(children: Sequence[C]) -> C:
    """A random live child among those that run (waiting for the first if none does yet)."""
    live = [c for c in children if c.alive]
    waits = [asyncio.create_task(c.ready.wait()) for c in live]
    try:
        async with asyncio.timeout(CATCH_UP_SECONDS):
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return random.choice([c for c in live if c.ready.is_set()])


# -- 1. subscription workers -----------------------------------------------------------------

WORKERS = 3
CONSUMER_KILLS = 6
CLOCKS = 6
"""Aggregates the appender writes to, one event per append."""


async def _append_ticks(
    store: PostgreSQLEventStore, stop: asyncio.Event, acked: list[Acked]
) -> None:
    """Appends Tick(n=version) to random aggregates until `stop`; each acknowledged event."""
    versions = {uuid4(): 0 for _ in range(CLOCKS)}
    while not stop.is_set():
        clock = random.choice(list(versions))
        version = versions[clock] + 1
        tick = Tick(n=version)
        await store.append_events(clock, "Clock", [tick], version - 1)
        versions[clock] = version
        acked.append((tick.event_id, clock, version))
        await asyncio.sleep(random.uniform(0, 0.02))


async def _start_worker(url: str, schema: str, mode: str) -> Child:
    return await Child.start("tests.subscriptions._worker", url, schema, mode)


async def _lease_holder(admin: Any, key: int) -> int | None:
    """The pid of the worker process that holds the subscription's advisory lock."""
    holder = await admin.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.classid::bigint = $1 AND l.objid::bigint = $2",
        (key >> 32) & 0xFFFFFFFF,
        key & 0xFFFFFFFF,
    )
    return None if holder is None else int(holder.removeprefix("worker-"))


def _first_deliveries(rows: list[tuple[UUID, int, UUID, int]]) -> dict[UUID, list[int]]:
    """Per aggregate, the versions in the order they were first handled."""
    seen: set[UUID] = set()
    order: dict[UUID, list[int]] = {}
    for event_id, _, aggregate_id, n in rows:
        if event_id not in seen:
            seen.add(event_id)
            order.setdefault(aggregate_id, []).append(n)
    return order


@pytest.mark.parametrize("mode", ["record", "ledger"])
async def test_killed_subscription_workers_lose_nothing(
    postgres_url: str, schema: str, mode: str
) -> None:
    """Three workers run one subscription (`record`: a plain handler, at least once;
    `ledger`: a `DatabaseProjection`, exactly once) while events are appended; every 0.5-1 s
    a worker is SIGKILLed (the lease holder every other time, else one at random) and a
    fresh one started. Then the survivors catch up on their own."""
    import asyncpg

    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=tick_registry)
    await store.create_schema()
    admin = await asyncpg.connect(postgres_url)
    workers: list[Child] = []
    acked: list[Acked] = []
    stop = asyncio.Event()
    appender: asyncio.Task[None] | None = None
    key = lease_key("shared" if mode == "record" else "LoggedTotals", f"{schema}.")
    holder_kills = 0
    try:
        await admin.execute(
            f'CREATE TABLE "{schema}".handled (seq bigserial PRIMARY KEY, event_id uuid NOT NULL,'
            " pid int NOT NULL, aggregate_id uuid NOT NULL, n int NOT NULL)"
        )
        await admin.execute(
            f'CREATE TABLE "{schema}".totals (total bigint NOT NULL, applied int NOT NULL)'
        )
        await admin.execute(f'INSERT INTO "{schema}".totals VALUES (0, 0)')
        workers += [await _start_worker(postgres_url, schema, mode) for _ in range(WORKERS)]
        appender = asyncio.create_task(_append_ticks(store, stop, acked))

        async def handling() -> bool:
            return bool(await admin.fetchval(f'SELECT count(*) > 0 FROM "{schema}".handled'))

        await _until(handling, "a worker started handling events")
        for kill in range(CONSUMER_KILLS):
            await asyncio.sleep(random.uniform(0.5, 1.0))
            holder = await _lease_holder(admin, key)
            if kill % 2 == 0:  # the holder, once a standby took the lease over
                async with asyncio.timeout(CATCH_UP_SECONDS):
                    while holder is None:
                        await asyncio.sleep(0.02)
                        holder = await _lease_holder(admin, key)
                victim = next(w for w in workers if w.process.pid == holder)
            else:
                victim = await _any_ready(workers)
            await victim.kill()
            holder_kills += victim.process.pid == holder
            workers.append(await _start_worker(postgres_url, schema, mode))
        stop.set()
        await appender
        assert acked, "nothing was appended"

        async def all_handled() -> bool:
            sql = f'SELECT count(DISTINCT event_id) FROM "{schema}".handled'
            return int(await admin.fetchval(sql)) >= len(acked)

        await _until(all_handled, "every acknowledged event handled after the kills")
        survivors = [w for w in workers if w.alive]
        exit_codes = [await w.stop() for w in survivors]
        rows = [
            (r[0], r[1], r[2], r[3])
            for r in await admin.fetch(
                f'SELECT event_id, pid, aggregate_id, n FROM "{schema}".handled ORDER BY seq'
            )
        ]
        total, applied = await admin.fetchrow(f'SELECT total, applied FROM "{schema}".totals')
    finally:
        stop.set()
        if appender is not None:
            with contextlib.suppress(Exception):
                await appender
        for worker in workers:
            await worker.kill()
        await admin.close()
        await store.close()

    assert len(survivors) == WORKERS
    assert exit_codes == [0] * WORKERS, "a surviving worker did not run until it was stopped"
    assert holder_kills >= CONSUMER_KILLS // 2, "the lease holder was not killed often enough"
    ids = [row[0] for row in rows]
    assert set(ids) == {a[0] for a in acked}, "handled events differ from the acknowledged ones"
    expected: dict[UUID, int] = {}
    for _, clock, version in acked:
        expected[clock] = version
    for clock, versions in _first_deliveries(rows).items():
        assert versions == list(range(1, expected[clock] + 1)), f"{clock} out of order: {versions}"
    duplicates = len(ids) - len(set(ids))
    if mode == "ledger":
        assert duplicates == 0, f"{duplicates} events applied twice by the DatabaseProjection"
        assert applied == len(acked)
        assert total == sum(version for _, _, version in acked)
    else:
        # a checkpoint after every event: only the event in flight at a kill runs again
        assert duplicates <= CONSUMER_KILLS, f"{duplicates} events handled again"
