"""Projections fed by subscriptions against raw asyncpg doing the same work, in the same run.

    uv run python benchmarks/subscriptions.py            # all workloads
    uv run python benchmarks/subscriptions.py --quick    # smaller sizes

1. Catch-up of 100,000 events into an in-memory projection (a sum), checkpointing every batch
   of 1,000 in PostgreSQL. Raw: keyset reads of the same feed below the transaction horizon,
   json.loads, the same sum, the same checkpoint upsert per batch.
2. Catch-up into a `DatabaseProjection` upserting one balance row per aggregate (1,000 rows):
   a page of 1,000 events per transaction, with one checkpoint write. Twice: `@handles`
   methods (one upsert statement per event), and `apply_batch` overridden to execute the upsert
   once for the page's rows (an executemany). Raw: the same feed read, the same upserts (one
   `execute` per event, resp. one `executemany`) and the same checkpoint upsert, one asyncpg
   transaction per page of 1,000.
3. Live latency from the start of an append to the handler, one event at a time at about 200
   appends/s: the library's subscription (woken by LISTEN/NOTIFY) against a raw reader that
   LISTENs on the same channel and reads the new rows.

Ratios are library / raw (throughput; for latency library / raw time), median of interleaved
repeats. Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import uuid4

import asyncpg
from _common import URL, Incremented, Lib, Result, interleave, keep_session, print_table, registry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventsource import StoredEvent
from eventsource.projections import DatabaseProjection, DeclarativeProjection, handles
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.subscriptions import CheckpointStrategy, SubscriptionConfig, SubscriptionManager

HORIZON = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"


class Sum(DeclarativeProjection):
    def __init__(self) -> None:
        self.total = 0
        self.count = 0

    @handles(Incremented)
    def _incremented(self, event: Incremented) -> None:
        self.total += event.amount
        self.count += 1


UPSERT = (
    "INSERT INTO {table} AS b (name, id, total, events) VALUES ({params})"
    " ON CONFLICT (name, id) DO UPDATE SET total = b.total + excluded.total,"
    " events = b.events + 1"
)


class Balances(DatabaseProjection):
    """One upsert per event, from its `@handles` method."""

    def __init__(self, engine: Any, checkpoints: Any, table: str, name: str) -> None:
        super().__init__(engine, checkpoints)
        self.name = name
        self.upsert = text(UPSERT.format(table=table, params=":name, :id, :amount, 1"))

    @handles(Incremented)
    async def _incremented(self, connection: AsyncConnection, event: Incremented) -> None:
        await connection.execute(
            self.upsert, {"name": self.name, "id": event.aggregate_id, "amount": event.amount}
        )


class BulkBalances(Balances):
    """The same upsert, executed once for all rows of a batch (an executemany)."""

    async def apply_batch(self, connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
        rows = []
        for stored in events:
            event = stored.event
            assert isinstance(event, Incremented)
            rows.append({"name": self.name, "id": event.aggregate_id, "amount": event.amount})
        await connection.execute(self.upsert, rows)


async def main(quick: bool) -> int:
    repeats = 3
    scale = 10 if quick else 1
    schema = f"eventsource_bench_sub_{os.getpid()}"
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, pool_size=16, max_overflow=4
    )
    await store.create_schema()
    checkpoints = PostgreSQLCheckpointRepository(store.engine, schema=schema)
    pool = await asyncpg.create_pool(URL, min_size=4, max_size=8, reset=keep_session)
    lib = Lib(store)
    results: list[Result] = []
    q = f'"{schema}"'
    feed_sql = (
        f"SELECT transaction_id, position, payload::text FROM {store.table}"
        f" WHERE (transaction_id, position) > ($1::xid8, $2::bigint)"
        f" AND transaction_id < {HORIZON} ORDER BY transaction_id, position LIMIT $3"
    )
    feed_sql_ids = feed_sql.replace("payload::text", "aggregate_id, payload::text")
    checkpoint_sql = (
        f"INSERT INTO {q}.checkpoints AS kept (name, position_commit, position_sequence,"
        " event_id, event_type, events_processed, updated_at)"
        " VALUES ($1, $2, $3, NULL, NULL, $4, now()) ON CONFLICT (name) DO UPDATE SET"
        " position_commit = excluded.position_commit,"
        " position_sequence = excluded.position_sequence,"
        " events_processed = kept.events_processed + excluded.events_processed,"
        " updated_at = excluded.updated_at"
    )
    try:
        events = 100_000 // scale
        for _ in range(events // 100):
            await lib.append(uuid4(), 0, [1] * 100)
        # Statistics as autovacuum would have them: right after a bulk load the planner guesses
        # the event-type filter selects 0.5% and sorts the rest of the feed for every page.
        await pool.execute(f"ANALYZE {store.table}")
        head = await store.current_position()
        config = SubscriptionConfig(
            batch_size=1000, poll_interval=0.5, checkpoint=CheckpointStrategy.every_batch()
        )

        # 1. catch-up into an in-memory projection
        async def lib_catch_up() -> float:
            projection = Sum()
            projection.name = f"sum-{uuid4().hex[:8]}"
            start = time.perf_counter()
            async with SubscriptionManager(store, checkpoints, config=config) as manager:
                await manager.subscribe(projection).wait_for(head, timeout=600)
            assert projection.count == events
            return events / (time.perf_counter() - start)

        async def raw_catch_up() -> float:
            name = f"raw-{uuid4().hex[:8]}"
            after, total, count = (0, 0), 0, 0
            start = time.perf_counter()
            async with pool.acquire() as conn:
                while True:
                    rows = await conn.fetch(feed_sql, after[0], after[1], 1000)
                    for row in rows:
                        total += json.loads(row[2])["amount"]
                        count += 1
                    if not rows:
                        break
                    after = (rows[-1][0], rows[-1][1])
                    await conn.execute(checkpoint_sql, name, after[0], after[1], len(rows))
            assert count == events
            return events / (time.perf_counter() - start)

        lib_rate, raw_rate = await interleave(repeats, lib_catch_up, raw_catch_up)
        results.append(
            Result(
                f"catch-up of {events:,} events, in-memory projection",
                "events/s",
                lib_rate,
                raw_rate,
                "",
            )
        )

        # 2. catch-up into a DatabaseProjection (a transaction per page of 1,000)
        await pool.execute(
            f"CREATE TABLE {q}.balances (name text, id uuid, total bigint, events int,"
            " PRIMARY KEY (name, id))"
        )
        raw_upsert = UPSERT.format(table=f"{q}.balances", params="$1, $2, $3, 1")

        def lib_database(kind: type[Balances], count: int) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                name = f"db-{uuid4().hex[:8]}"
                projection = kind(store.engine, checkpoints, f"{q}.balances", name)
                start = time.perf_counter()
                async with SubscriptionManager(store, checkpoints, config=config) as manager:
                    subscription = manager.subscribe(projection)
                    while subscription.processed < count:  # noqa: ASYNC110 - a count
                        await asyncio.sleep(0.005)
                    elapsed = time.perf_counter() - start
                    done = subscription.processed
                    await manager.stop()
                applied = await pool.fetchval(
                    f"SELECT sum(events) FROM {q}.balances WHERE name = $1", name
                )
                assert applied == subscription.processed >= count, (applied, count)
                return done / elapsed

            return run

        def raw_database(bulk: bool, count: int) -> Callable[[], Awaitable[float]]:
            async def run() -> float:
                name = f"rawdb-{uuid4().hex[:8]}"
                after, done = (0, 0), 0
                start = time.perf_counter()
                async with pool.acquire() as conn:
                    while done < count:
                        rows = await conn.fetch(feed_sql_ids, after[0], after[1], 1000)
                        upserts = [(name, r[2], json.loads(r[3])["amount"]) for r in rows]
                        after = (rows[-1][0], rows[-1][1])
                        async with conn.transaction():
                            if bulk:
                                await conn.executemany(raw_upsert, upserts)
                            else:
                                for upsert in upserts:
                                    await conn.execute(raw_upsert, *upsert)
                            await conn.execute(checkpoint_sql, name, *after, len(rows))
                        done += len(rows)
                elapsed = time.perf_counter() - start
                return done / elapsed

            return run

        per_event = 20_000 // scale
        lib_rate, raw_rate = await interleave(
            repeats, lib_database(Balances, per_event), raw_database(False, per_event)
        )
        results.append(
            Result(
                f"catch-up into a DatabaseProjection, {per_event:,} events: @handles upserts,"
                " a transaction per 1,000",
                "events/s",
                lib_rate,
                raw_rate,
                "",
            )
        )
        lib_rate, raw_rate = await interleave(
            repeats, lib_database(BulkBalances, events), raw_database(True, events)
        )
        results.append(
            Result(
                f"catch-up into a DatabaseProjection, {events:,} events: apply_batch"
                " (executemany), a transaction per 1,000",
                "events/s",
                lib_rate,
                raw_rate,
                ">= 20,000 events/s",
            )
        )

        # 3. live latency, append -> handler
        appends = 400 // scale

        async def measure(
            start_reader: Callable[[dict[Any, float]], Awaitable[Callable[[], Awaitable[None]]]],
        ) -> tuple[float, float]:
            handled: dict[Any, float] = {}
            stop_reader = await start_reader(handled)
            sent: dict[Any, float] = {}
            await asyncio.sleep(0.2)
            for _ in range(appends):
                event = Incremented(amount=1)
                sent[event.event_id] = time.perf_counter()
                await store.append_events(uuid4(), "Counter", [event], 0)
                await asyncio.sleep(0.005)
            async with asyncio.timeout(30):
                while len([k for k in sent if k in handled]) < appends:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await stop_reader()
            latencies = sorted((handled[k] - sent[k]) * 1000 for k in sent)
            return statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]

        async def lib_reader(handled: dict[Any, float]) -> Callable[[], Awaitable[None]]:
            async def on_event(stored: StoredEvent) -> None:
                handled[stored.event_id] = time.perf_counter()

            live = SubscriptionConfig(batch_size=500, poll_interval=1.0, start_from="end")
            manager = SubscriptionManager(store, checkpoints, config=live)
            manager.subscribe(on_event, name=f"live-{uuid4().hex[:8]}")
            await manager.start()
            return manager.stop

        async def raw_reader(handled: dict[Any, float]) -> Callable[[], Awaitable[None]]:
            conn = await asyncpg.connect(URL)
            listen = await asyncpg.connect(URL)
            wake = asyncio.Event()
            row = await conn.fetchrow(
                f"SELECT transaction_id, position FROM {store.table} WHERE transaction_id"
                f" < {HORIZON} ORDER BY transaction_id DESC, position DESC LIMIT 1"
            )
            state = {"after": (row[0], row[1]) if row else (0, 0)}
            await listen.add_listener(store.channel, lambda *_: wake.set())
            sql = feed_sql.replace("payload::text", "event_id")

            async def loop() -> None:
                while True:
                    try:
                        async with asyncio.timeout(1.0):
                            await wake.wait()
                    except TimeoutError:
                        pass
                    wake.clear()
                    while rows := await conn.fetch(sql, *state["after"], 500):
                        for r in rows:
                            handled[r[2]] = time.perf_counter()
                        state["after"] = (rows[-1][0], rows[-1][1])

            task = asyncio.create_task(loop())

            async def stop() -> None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await listen.close()
                await conn.close()

            return stop

        lib_p = [await measure(lib_reader), await measure(lib_reader)]
        raw_p = [await measure(raw_reader), await measure(raw_reader)]
        lib_p50 = statistics.median(p[0] for p in lib_p)
        raw_p50 = statistics.median(p[0] for p in raw_p)
        lib_p99 = statistics.median(p[1] for p in lib_p)
        raw_p99 = statistics.median(p[1] for p in raw_p)
        results.append(
            Result("live latency p50, append -> handler", "ms", lib_p50, raw_p50, "", False)
        )
        results.append(Result("live latency p99", "ms", lib_p99, raw_p99, "", False))
    finally:
        await pool.execute(f"DROP SCHEMA IF EXISTS {q} CASCADE")
        await pool.close()
        await checkpoints.close()
        await store.close()
    print_table(f"Subscriptions vs raw asyncpg (median of {repeats} interleaved runs)", results)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
