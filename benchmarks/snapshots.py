"""Fast aggregate loading against raw asyncpg doing the same work, in the same run.

    uv run python benchmarks/snapshots.py            # all workloads
    uv run python benchmarks/snapshots.py --quick    # fewer commands, for a smoke run

1. Load a 10,000-event aggregate without a snapshot (replay every event) and with a snapshot
   at its last version (read the snapshot row, then the empty tail). Raw asyncpg runs the same
   statements and folds the JSON with json.loads.
2. A hot aggregate: 16 workers send commands (load + 1 event + save) to ONE aggregate.
   Plainly, every writer but one loses each race and retries (library: `execute`; raw: the
   same loop). With the library's cache and per-aggregate command serialization the commands
   queue instead; the raw counterpart is the same idea written by hand: an asyncio.Lock and an
   in-process (version, total) cache, reading only the events after the cached version.

Ratios are library / raw (time for loads), median of interleaved repeats.
Environment: EVENTSOURCE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from uuid import UUID, uuid4

import asyncpg
from _common import (
    URL,
    Conflict,
    Counter,
    Lib,
    Raw,
    Result,
    interleave,
    keep_session,
    print_table,
    registry,
)

from eventsource import AggregateCache, AggregateRepository, SnapshotPolicy
from eventsource.snapshots.postgresql import PostgreSQLSnapshotStore
from eventsource.stores.postgresql import PostgreSQLEventStore


class RawWithSnapshots(Raw):
    def __init__(self, pool: asyncpg.Pool, table: str, channel: str, snapshots: str) -> None:
        super().__init__(pool, table, channel)
        self.snapshot_sql = f"SELECT version, state::text FROM {snapshots} WHERE aggregate_id = $1"
        self.tail_sql = (
            f"SELECT aggregate_version, payload::text FROM {table}"
            " WHERE aggregate_id = $1 AND aggregate_version > $2 ORDER BY aggregate_version"
        )
        self.lock = asyncio.Lock()
        self.cached: dict[UUID, tuple[int, int]] = {}

    async def load_from_snapshot(self, aggregate_id: UUID) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(self.snapshot_sql, aggregate_id)
            version, total = (row[0], json.loads(row[1])["total"]) if row else (0, 0)
            rows = await conn.fetch(self.tail_sql, aggregate_id, version)
        for row in rows:
            total += json.loads(row[1])["amount"]
            version = row[0]
        return version, total

    async def cached_command(self, aggregate_id: UUID) -> None:
        """Serialized by a lock, starting from the cached state and reading only the tail."""
        async with self.lock:
            version, total = self.cached.get(aggregate_id, (0, 0))
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(self.tail_sql, aggregate_id, version)
            for row in rows:
                total += json.loads(row[1])["amount"]
                version = row[0]
            try:
                version = await self.append(aggregate_id, version, [1])
            except Conflict:  # another process appended: the next command reads it
                self.cached[aggregate_id] = (version, total)
                raise
            self.cached[aggregate_id] = (version, total + 1)


async def hot(command: object, aggregate_id: UUID, workers: int, per_worker: int) -> float:
    async def worker() -> None:
        for _ in range(per_worker):
            await command(aggregate_id)  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return workers * per_worker / (time.perf_counter() - start)


async def main(quick: bool) -> int:
    repeats = 3 if quick else 5
    schema = f"eventsource_bench_snap_{os.getpid()}"
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, pool_size=16, max_overflow=4
    )
    await store.create_schema()
    snapshots = PostgreSQLSnapshotStore(store.engine, schema=schema)
    pool = await asyncpg.create_pool(URL, min_size=16, max_size=20, reset=keep_session)
    snapshot_table = snapshots.table
    raw = RawWithSnapshots(pool, store.table, store.channel, snapshot_table)
    lib = Lib(store)
    results: list[Result] = []
    try:
        # 1. a 10,000-event aggregate, loaded by replay and from a snapshot at its last version
        big = uuid4()
        version = 0
        for _ in range(10):
            version = await lib.append(big, version, list(range(1000)))
        with_snapshots = AggregateRepository(
            store, Counter, snapshot_store=snapshots, snapshot_policy=SnapshotPolicy.manual()
        )
        await with_snapshots.snapshot(await with_snapshots.load(big))

        async def timed_load(load: object) -> float:
            start = time.perf_counter()
            loaded_version, _ = await load(big)  # type: ignore[operator]
            assert loaded_version == 10_000
            return (time.perf_counter() - start) * 1000

        async def lib_snapshot_load(aggregate_id: UUID) -> tuple[int, int]:
            counter = await with_snapshots.load(aggregate_id)
            return counter.version, counter.state.total

        lib_ms, raw_ms = await interleave(
            repeats, lambda: timed_load(lib.load), lambda: timed_load(raw.load)
        )
        results.append(Result("load 10,000 events, no snapshot", "ms", lib_ms, raw_ms, "", False))
        lib_ms, raw_ms = await interleave(
            repeats,
            lambda: timed_load(lib_snapshot_load),
            lambda: timed_load(raw.load_from_snapshot),
        )
        results.append(
            Result(
                "load 10,000 events from a snapshot",
                "ms",
                lib_ms,
                raw_ms,
                "",
                False,
                note=f"{with_snapshots.stats.snapshot_loads} loads from the snapshot",
            )
        )

        # 2. a hot aggregate: 16 workers, one aggregate
        workers, per_worker = 16, (5 if quick else 15)
        plain = AggregateRepository(store, Counter, max_retries=1000)
        tuned = AggregateRepository(store, Counter, cache=AggregateCache(), serialize_commands=True)

        async def lib_plain(aggregate_id: UUID) -> None:
            await plain.execute(aggregate_id, lambda c: c.increment(1))

        async def lib_tuned(aggregate_id: UUID) -> None:
            await tuned.execute(aggregate_id, lambda c: c.increment(1))

        hot_lib, hot_raw = uuid4(), uuid4()
        await lib.append(hot_lib, 0, [1] * 100)
        await lib.append(hot_raw, 0, [1] * 100)
        lib_rate, raw_rate = await interleave(
            repeats,
            lambda: hot(lib_plain, hot_lib, workers, per_worker),
            lambda: hot(raw.command, hot_raw, workers, per_worker),
        )
        results.append(
            Result("hot aggregate, 16 writers, plain", "commands/s", lib_rate, raw_rate, "")
        )
        lib_rate, raw_rate = await interleave(
            repeats,
            lambda: hot(lib_tuned, hot_lib, workers, per_worker * 4),
            lambda: hot(raw.cached_command, hot_raw, workers, per_worker * 4),
        )
        results.append(
            Result(
                "hot aggregate, 16 writers, cache + serialized",
                "commands/s",
                lib_rate,
                raw_rate,
                "",
                note=f"{tuned.stats.cache_hits} cache hits",
            )
        )
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
        await snapshots.close()
        await store.close()

    print_table(f"Aggregate loading vs raw asyncpg (median of {repeats} interleaved runs)", results)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer commands and repeats")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
