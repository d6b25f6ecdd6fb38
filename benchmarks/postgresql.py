"""PostgreSQLEventStore against raw asyncpg doing the same work, in the same run.

    uv run python benchmarks/postgresql.py            # all workloads
    uv run python benchmarks/postgresql.py --quick    # smaller sizes, for a smoke run

The raw side is what a careful hand-written asyncpg program would do against the same table
(an asyncpg pool without the reset query on release, so no extra round trip per checkout):
the same statements (one multi-row INSERT ... unnest per append with the version guard and the
NOTIFY, keyset reads of the global feed below the transaction horizon, one SELECT per stream),
with payloads built by json.dumps and read by json.loads into dicts. The library side goes
through the public API (AggregateRepository, PostgreSQLEventStore) with pydantic events.
Ratios are library / raw throughput (for the load: library time / raw time), median of
interleaved repeats, so a noisy neighbour hits both sides alike.

Environment: EVENTSOURCE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
Every run works in its own schema and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg
from pydantic import BaseModel

from eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    ReadOptions,
    handles,
)
from eventsource._internal.ids import uuid7
from eventsource.stores.postgresql import PostgreSQLEventStore

URL = os.environ.get("EVENTSOURCE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
registry = EventRegistry()


class Incremented(DomainEvent, registry=registry):
    amount: int
    note: str = "benchmark payload of a typical size, a few fields and some text"


class CounterState(BaseModel):
    total: int = 0
    count: int = 0


class Counter(DeclarativeAggregate[CounterState]):
    aggregate_type = "Counter"

    def increment(self, amount: int) -> None:
        self.apply_event(Incremented(amount=amount))

    @handles(Incremented)
    def _incremented(self, event: Incremented) -> None:
        self.state.total += event.amount
        self.state.count += 1


class Conflict(Exception):
    """The raw append found the stream at another version."""


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query on release (a round trip): raw asyncpg at its fastest."""


# -- the raw side ------------------------------------------------------------------------------


class Raw:
    """Hand-written asyncpg against the same table."""

    def __init__(self, pool: asyncpg.Pool, table: str, channel: str) -> None:
        self.pool = pool
        self.channel = channel
        self.append_sql = (
            f"WITH appended AS ("
            f" INSERT INTO {table} (event_id, event_type, event_version, aggregate_id,"
            f" aggregate_type, aggregate_version, tenant_id, occurred_at, payload)"
            f" SELECT e.event_id, e.event_type, 1, $1, $2, $5 + e.ord, NULL, e.occurred_at,"
            f" e.payload::jsonb"
            f" FROM unnest($3::uuid[], $4::text[], $6::timestamptz[], $7::text[])"
            f" WITH ORDINALITY AS e(event_id, event_type, occurred_at, payload, ord)"
            f" WHERE $5::bigint = 0 OR EXISTS (SELECT 1 FROM {table}"
            f" WHERE aggregate_id = $1 AND aggregate_version = $5::bigint)"
            f" ORDER BY e.ord RETURNING transaction_id, position)"
            f" SELECT transaction_id, position, (SELECT pg_notify($8, $2)) IS NULL FROM appended"
        )
        self.stream_sql = (
            f"SELECT aggregate_version, payload::text FROM {table}"
            " WHERE aggregate_id = $1 ORDER BY aggregate_version"
        )
        self.feed_sql = (
            f"SELECT transaction_id, position, event_id, payload::text FROM {table}"
            " WHERE (transaction_id, position) > ($1::xid8, $2::bigint)"
            " AND transaction_id < (SELECT pg_snapshot_xmin(pg_current_snapshot()))"
            " ORDER BY transaction_id, position LIMIT $3"
        )

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        now = datetime.now(UTC)
        ids = [uuid7() for _ in amounts]  # the library's ids: same index behaviour
        payloads = [
            json.dumps(
                {
                    "event_id": str(event_id),
                    "event_type": "Incremented",
                    "aggregate_id": str(aggregate_id),
                    "aggregate_type": "Counter",
                    "aggregate_version": version + n,
                    "occurred_at": now.isoformat(),
                    "amount": amount,
                    "note": Incremented.model_fields["note"].default,
                }
            )
            for n, (event_id, amount) in enumerate(zip(ids, amounts, strict=True), start=1)
        ]
        async with self.pool.acquire() as conn:
            try:
                rows = await conn.fetch(
                    self.append_sql,
                    aggregate_id,
                    "Counter",
                    ids,
                    ["Incremented"] * len(ids),
                    version,
                    [now] * len(ids),
                    payloads,
                    self.channel,
                )
            except asyncpg.UniqueViolationError:
                rows = []
        if len(rows) != len(amounts):
            raise Conflict
        return version + len(amounts)

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(self.stream_sql, aggregate_id)
        total = 0
        for row in rows:
            total += json.loads(row[1])["amount"]
        return (rows[-1][0] if rows else 0), total

    async def command(self, aggregate_id: UUID) -> None:
        while True:  # like AggregateRepository.execute: reload and retry on a conflict
            version, _ = await self.load(aggregate_id)
            try:
                await self.append(aggregate_id, version, [1])
            except Conflict:
                continue
            return

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, set[UUID]]:
        after: tuple[int, int] = (0, 0)
        total = 0
        seen: set[UUID] = set()
        async with self.pool.acquire() as conn:
            while len(seen) < limit:
                rows = await conn.fetch(
                    self.feed_sql, after[0], after[1], min(batch, limit - len(seen))
                )
                for row in rows:
                    total += json.loads(row[3]).get("amount", 0)
                    seen.add(row[2])
                if not rows:
                    break
                after = (rows[-1][0], rows[-1][1])
        return total, seen


# -- the library side --------------------------------------------------------------------------


class Lib:
    def __init__(self, store: PostgreSQLEventStore) -> None:
        self.store = store
        self.counters = AggregateRepository(store, Counter)

    async def append(self, aggregate_id: UUID, version: int, amounts: list[int]) -> int:
        events = [Incremented(amount=a) for a in amounts]
        result = await self.store.append_events(aggregate_id, "Counter", events, version)
        return result.new_version

    async def load(self, aggregate_id: UUID) -> tuple[int, int]:
        counter = await self.counters.load(aggregate_id)
        return counter.version, counter.state.total

    async def command(self, aggregate_id: UUID) -> None:
        await self.counters.execute(aggregate_id, lambda c: c.increment(1))

    async def catch_up(self, limit: int, batch: int = 1000) -> tuple[int, set[UUID]]:
        total = 0
        seen: set[UUID] = set()
        async for stored in self.store.read_all(ReadOptions(batch_size=batch, limit=limit)):
            event = stored.event
            if isinstance(event, Incremented):
                total += event.amount
            seen.add(stored.event_id)
        return total, seen


# -- workloads ---------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    unit: str
    lib: float
    raw: float
    target: str
    higher_is_better: bool = True
    note: str = ""


async def interleave(
    repeats: int, lib: Callable[[], Awaitable[float]], raw: Callable[[], Awaitable[float]]
) -> tuple[float, float]:
    lib_values, raw_values = [], []
    for n in range(repeats):
        first, second = (lib, raw) if n % 2 == 0 else (raw, lib)
        a = await first()
        b = await second()
        lib_values.append(a if first is lib else b)
        raw_values.append(b if first is lib else a)
    return statistics.median(lib_values), statistics.median(raw_values)


async def commands(side: Lib | Raw, streams: list[UUID], per_worker: int, workers: int) -> float:
    async def worker(n: int) -> int:
        for i in range(per_worker):
            await side.command(streams[(n + i * workers) % len(streams)])
        return per_worker

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return workers * per_worker / (time.perf_counter() - start)


async def main(quick: bool) -> int:
    scale = 10 if quick else 1
    repeats = 3 if quick else 5
    schema = f"eventsource_bench_{os.getpid()}"
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, pool_size=16, max_overflow=4
    )
    await store.create_schema()
    pool = await asyncpg.create_pool(URL, min_size=16, max_size=20, reset=_keep_session)
    raw, lib = Raw(pool, store.table, store.channel), Lib(store)
    results: list[Result] = []
    try:
        # 1. commands: load + 1 event + save, on 200 aggregates of 10 events each
        streams = [uuid4() for _ in range(200)]
        for s in streams:
            await lib.append(s, 0, list(range(10)))
        for workers, per_worker, target in (
            (1, 400 // scale, ">= 0.7x"),
            (16, 60 // scale, ">= 0.7x"),
        ):
            lib_rate, raw_rate = await interleave(
                repeats,
                lambda w=workers, p=per_worker: commands(lib, streams, p, w),
                lambda w=workers, p=per_worker: commands(raw, streams, p, w),
            )
            results.append(
                Result(f"command, concurrency {workers}", "commands/s", lib_rate, raw_rate, target)
            )

        # 2. rehydrate one 10,000-event aggregate
        big = uuid4()
        version = 0
        for _ in range(10):
            version = await lib.append(big, version, list(range(1000)))

        async def load_time(side: Lib | Raw) -> float:
            start = time.perf_counter()
            loaded_version, _ = await side.load(big)
            assert loaded_version == 10_000
            return (time.perf_counter() - start) * 1000

        lib_ms, raw_ms = await interleave(repeats, lambda: load_time(lib), lambda: load_time(raw))
        results.append(
            Result("rehydrate 10,000-event aggregate", "ms", lib_ms, raw_ms, "<= 2.5x time", False)
        )

        # 3. bulk append: 1,000 appends of 100 events (sequential)
        appends = 1000 // scale

        async def bulk(side: Lib | Raw) -> float:
            start = time.perf_counter()
            for _ in range(appends):
                await side.append(uuid4(), 0, list(range(100)))
            return appends * 100 / (time.perf_counter() - start)

        lib_rate, raw_rate = await interleave(repeats, lambda: bulk(lib), lambda: bulk(raw))
        results.append(
            Result("bulk append, 100 events per call", "events/s", lib_rate, raw_rate, ">= 0.8x")
        )

        # 4. catch-up read of the first 100,000 events of the feed into a projection
        total_events = min(100_000, await pool.fetchval(f"SELECT count(*) FROM {store.table}"))

        async def catch_up(side: Lib | Raw) -> float:
            start = time.perf_counter()
            _, seen = await side.catch_up(total_events)
            assert len(seen) == total_events
            return len(seen) / (time.perf_counter() - start)

        lib_rate, raw_rate = await interleave(repeats, lambda: catch_up(lib), lambda: catch_up(raw))
        results.append(
            Result(
                f"catch-up read of {total_events:,} events",
                "events/s",
                lib_rate,
                raw_rate,
                ">= 0.6x",
            )
        )

        # 5. 16 writers (1-3 events per append) while a reader follows the feed
        missed_total = 0

        async def writers_with_reader(side: Lib | Raw) -> float:
            nonlocal missed_total
            written: set[UUID] = set()
            start_position = await store.current_position()
            stop = asyncio.Event()

            async def writer(n: int) -> None:
                aggregate, version = uuid4(), 0
                for i in range(100 // scale):
                    count = 1 + (n + i) % 3
                    if isinstance(side, Lib):
                        events = [Incremented(amount=1) for _ in range(count)]
                        result = await store.append_events(aggregate, "Counter", events, version)
                        version = result.new_version
                        written.update(e.event_id for e in events)
                    else:
                        version = await raw.append(aggregate, version, [1] * count)
                aggregate_ids.append(aggregate)

            async def reader() -> set[UUID]:
                seen: set[UUID] = set()
                after = start_position
                while True:
                    finished = stop.is_set()
                    async for stored in store.read_all(ReadOptions(after=after)):
                        seen.add(stored.event_id)
                        after = stored.position
                    if finished:
                        return seen
                    await asyncio.sleep(0.005)

            aggregate_ids: list[UUID] = []
            reading = asyncio.create_task(reader())
            start = time.perf_counter()
            await asyncio.gather(*(writer(n) for n in range(16)))
            elapsed = time.perf_counter() - start
            stop.set()
            seen = await reading
            expected = sum(
                await asyncio.gather(*(store.get_stream_version(a) for a in aggregate_ids))
            )
            if isinstance(side, Lib):
                missed_total += len(written - seen)
            return expected / elapsed

        lib_rate, raw_rate = await interleave(
            repeats, lambda: writers_with_reader(lib), lambda: writers_with_reader(raw)
        )
        results.append(
            Result(
                "16 writers + catch-up reader",
                "events/s",
                lib_rate,
                raw_rate,
                ">= 0.8x, 0 missed",
                note=f"{missed_total} events missed by the reader",
            )
        )
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
        await store.close()

    print(f"PostgreSQLEventStore vs raw asyncpg (median of {repeats} interleaved runs)\n")
    print("| workload | library | raw asyncpg | ratio | target |")
    print("|---|---|---|---|---|")
    for r in results:
        ratio = f"{r.lib / r.raw:.2f}x" + (" time" if not r.higher_is_better else "")
        extra = f" ({r.note})" if r.note else ""
        lib, raw_value = f"{r.lib:,.0f} {r.unit}", f"{r.raw:,.0f} {r.unit}"
        print(f"| {r.name} | {lib} | {raw_value} | {ratio}{extra} | {r.target} |")
    return 0 if missed_total == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
