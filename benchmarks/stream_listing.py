"""`list_streams` on PostgreSQL against raw asyncpg, in the same run.

    uv run python benchmarks/stream_listing.py            # 1,000,000 events, 10,000 streams
    uv run python benchmarks/stream_listing.py --quick    # 100,000 events, 1,000 streams

The events table is filled by one INSERT ... SELECT generate_series (streams of 100 events,
one stream in ten of type "Order"), then analysed. Workloads, each timed as the median of
interleaved rounds of 20 calls:

1. a page of 100 streams, from the start and after an id in the middle;
2. a page of 100 streams of one type (one stream in ten has it);
3. every stream, a page of 1,000 at a time.

Sides: the library (`PostgreSQLEventStore.list_streams`); raw asyncpg running the library's
own statement (isolates the library's Python cost); raw asyncpg running what one would write
first, `SELECT DISTINCT ON (aggregate_id) ... ORDER BY aggregate_id, aggregate_version DESC
LIMIT n`, which reads every event of the streams it returns. Ratios are library / baseline
time (lower is better). Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from _common import URL, Line, interleave_sides, load_average, print_lines

from eventsource.stores._stream_list import stream_list_sql
from eventsource.stores.postgresql import PostgreSQLEventStore

CALLS = 20
STREAM_SIZE = 100


async def _fill(conn: asyncpg.Connection, table: str, events: int) -> None:
    await conn.execute(
        f"INSERT INTO {table} (event_id, event_type, event_version, aggregate_id,"
        " aggregate_type, aggregate_version, occurred_at, payload, correlation_id)"
        " SELECT gen_random_uuid(), 'ItemAdded', 1,"
        " ('00000000-0000-0000-0000-' || lpad(to_hex(g / $2), 12, '0'))::uuid,"
        " CASE WHEN (g / $2) % 10 = 0 THEN 'Order' ELSE 'Cart' END, g % $2 + 1, now(),"
        ' \'{"name": "x", "quantity": 1}\', gen_random_uuid()'
        " FROM generate_series(0, $1 - 1) g",
        events,
        STREAM_SIZE,
    )
    await conn.execute(f"ANALYZE {table}")


def _timed(call: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[float]]:
    """Milliseconds per call over `CALLS` calls."""

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(CALLS):
            await call()
        return (time.perf_counter() - start) * 1000 / CALLS

    return run


async def main(quick: bool) -> None:
    events = 100_000 if quick else 1_000_000
    schema = f"bench_streams_{uuid4().hex[:8]}"
    store = PostgreSQLEventStore.from_url(URL, schema=schema)
    conn = await asyncpg.connect(URL)
    try:
        await store.create_schema()
        table = f'"{schema}"."events"'
        started = time.perf_counter()
        await _fill(conn, table, events)
        streams = events // STREAM_SIZE
        took = time.perf_counter() - started
        print(f"filled {events:,} events in {streams:,} streams in {took:.0f} s")

        def sql(after: bool, typed: bool) -> str:
            return stream_list_sql(table, after=after, typed=typed, param=lambda n, k: f"${n}::{k}")

        naive = (
            f"SELECT DISTINCT ON (aggregate_id) aggregate_id, aggregate_type, aggregate_version,"
            f" recorded_at FROM {table}{{where}} ORDER BY aggregate_id, aggregate_version DESC"
            " LIMIT $1"
        )
        middle = UUID(int=streams // 2)

        async def every_page_library() -> None:
            after = None
            while page := await store.list_streams(after=after, limit=1000):
                after = page[-1].aggregate_id

        async def every_page_raw() -> None:
            rows: list[Any] = await conn.fetch(sql(False, False), 1000)
            while rows:
                rows = await conn.fetch(sql(True, False), rows[-1][0], 1000)

        workloads: list[tuple[str, dict[str, Callable[[], Awaitable[float]]]]] = [
            (
                "100 streams from the start",
                {
                    "library": _timed(lambda: store.list_streams(limit=100)),
                    "same SQL": _timed(lambda: conn.fetch(sql(False, False), 100)),
                    "DISTINCT ON": _timed(lambda: conn.fetch(naive.format(where=""), 100)),
                },
            ),
            (
                "100 streams after a middle id",
                {
                    "library": _timed(lambda: store.list_streams(after=middle, limit=100)),
                    "same SQL": _timed(lambda: conn.fetch(sql(True, False), middle, 100)),
                    "DISTINCT ON": _timed(
                        lambda: conn.fetch(
                            naive.format(where=" WHERE aggregate_id > $2"), 100, middle
                        )
                    ),
                },
            ),
            (
                "100 streams of one type (1 in 10)",
                {
                    "library": _timed(
                        lambda: store.list_streams(aggregate_type="Order", limit=100)
                    ),
                    "same SQL": _timed(lambda: conn.fetch(sql(False, True), "Order", 100)),
                    "DISTINCT ON": _timed(
                        lambda: conn.fetch(
                            naive.format(where=" WHERE aggregate_type = $2"), 100, "Order"
                        )
                    ),
                },
            ),
        ]
        lines = []
        for name, sides in workloads:
            medians = await interleave_sides(5, sides)
            library = medians.pop("library")
            lines.append(Line(name, "ms", library, medians, higher_is_better=False))
        paging = await interleave_sides(
            3,
            {
                "library": _timed(every_page_library),
                "same SQL": _timed(every_page_raw),
            },
        )
        library = paging.pop("library")
        lines.append(
            Line(
                f"all {streams:,} streams, pages of 1,000",
                "ms",
                library,
                paging,
                higher_is_better=False,
            )
        )
        print_lines(
            f"list_streams on {events:,} events (load average {load_average()})",
            ["same SQL", "DISTINCT ON"],
            lines,
        )
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events")
    asyncio.run(main(parser.parse_args().quick))
