"""Store migration throughput against a raw asyncpg copy of the same rows, in the same run.

    uv run python benchmarks/migration.py            # 20,000 events per workload
    uv run python benchmarks/migration.py --quick    # 4,000 events, for a smoke run

A PostgreSQL source schema is filled through the library, then copied into fresh target
schemas, alternately by:
- the library: `StoreMigration.copy()` (pages of 500, one append per run of a stream's
  consecutive events, checkpoint per page, rows re-appended as stored);
- raw asyncpg: pages of 500 read by keyset on (transaction_id, position), each page written
  with one `copy_records_to_table` into the same table (no per-stream version check, no
  idempotency, no checkpoint): the fastest way a person would move the rows by hand.

Two feeds: "interleaved" (appends of 1-3 events to 2,000 streams at random, as a live
application writes: runs are short) and "bulk" (streams written 100 events at a time: long
runs). Ratio = library events/s / raw events/s, median of interleaved repeats.
Environment: EVENTSOURCE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from uuid import uuid4

import asyncpg
from _common import URL, Incremented, load_average, registry

from eventsource import ExpectedVersion, PostgreSQLEventStore
from eventsource.migration import StoreMigration
from eventsource.repositories.postgresql import PostgreSQLCheckpointRepository

COLUMNS = [
    "event_id",
    "event_type",
    "event_version",
    "aggregate_id",
    "aggregate_type",
    "aggregate_version",
    "tenant_id",
    "occurred_at",
    "payload",
]
PAGE = 500


async def fill(store: PostgreSQLEventStore, events: int, *, bulk: bool) -> None:
    if bulk:
        for _ in range(events // 100):
            batch = [Incremented(amount=n) for n in range(100)]
            await store.append_events(uuid4(), "Counter", batch, ExpectedVersion.NO_STREAM)
        return
    versions = {uuid4(): 0 for _ in range(2000)}
    streams = list(versions)
    written = 0

    async def writer() -> None:
        nonlocal written
        while written < events:
            stream = random.choice(streams)
            if versions[stream] < 0:
                await asyncio.sleep(0)
                continue
            base, versions[stream] = versions[stream], -1
            n = random.randint(1, 3)
            batch = [Incremented(amount=k) for k in range(n)]
            await store.append_events(stream, "Counter", batch, base)
            versions[stream] = base + n
            written += n

    await asyncio.gather(*(writer() for _ in range(8)))


async def raw_copy(url: str, source: str, target: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        cols = ", ".join(COLUMNS)
        after = (0, 0)
        copied = 0
        while True:
            rows = await conn.fetch(
                f"SELECT transaction_id::text::bigint, position, {cols} FROM"
                f' "{source}".events WHERE (transaction_id, position) >'
                " ($1::text::xid8, $2) ORDER BY transaction_id, position LIMIT $3",
                str(after[0]),
                after[1],
                PAGE,
            )
            if not rows:
                return copied
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "events",
                    schema_name=target,
                    columns=COLUMNS,
                    records=[tuple(row[2:]) for row in rows],
                )
            after = (rows[-1][0], rows[-1][1])
            copied += len(rows)
    finally:
        await conn.close()


async def lib_copy(url: str, source: str, target: str) -> int:
    async with (
        PostgreSQLEventStore.from_url(url, schema=source) as src,
        PostgreSQLEventStore.from_url(url, schema=target) as dst,
        PostgreSQLCheckpointRepository(dst.engine, schema=target) as state,
    ):
        return await StoreMigration(src, dst, state=state, batch_size=PAGE).copy()


async def fresh_schema(url: str) -> str:
    schema = f"bench_mig_{uuid4().hex[:10]}"
    async with PostgreSQLEventStore.from_url(url, schema=schema) as store:
        await store.create_schema()
    return schema


async def drop(url: str, *schemas: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def workload(name: str, events: int, repeats: int, *, bulk: bool) -> None:
    source = await fresh_schema(URL)
    made = [source]
    try:
        async with PostgreSQLEventStore.from_url(URL, schema=source, registry=registry) as store:
            await fill(store, events, bulk=bulk)
            total = await store.count_events()
        rates: dict[str, list[float]] = {"library": [], "raw": []}
        for _ in range(repeats):
            for side, copy in (("library", lib_copy), ("raw", raw_copy)):
                target = await fresh_schema(URL)
                made.append(target)
                started = time.perf_counter()
                copied = await copy(URL, source, target)
                rates[side].append(copied / (time.perf_counter() - started))
                assert copied == total, (side, copied, total)
        lib, raw = (statistics.median(rates[s]) for s in ("library", "raw"))
        print(
            f"{name:<12} {total:>7,} events  library {lib:>8,.0f} ev/s  raw {raw:>8,.0f} ev/s"
            f"  ratio {lib / raw:.2f}x"
        )
    finally:
        await drop(URL, *made)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    events, repeats = (4000, 2) if args.quick else (20000, 3)
    print(f"load average before: {load_average()}")
    await workload("interleaved", events, repeats, bulk=False)
    await workload("bulk", events, repeats, bulk=True)
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    asyncio.run(main())
