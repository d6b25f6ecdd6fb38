"""PostgreSQLEventStore against raw asyncpg doing the same work, in the same run.

    uv run python benchmarks/postgresql.py            # all workloads
    uv run python benchmarks/postgresql.py --quick    # smaller sizes, for a smoke run
    uv run python benchmarks/postgresql.py --telemetry  # with an OpenTelemetry SDK recording

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
import os
import sys
import time
from uuid import UUID, uuid4

import asyncpg
from _common import (
    URL,
    Incremented,
    Lib,
    Raw,
    Result,
    interleave,
    keep_session,
    print_table,
    registry,
)

from eventsource import ReadOptions
from eventsource.stores.postgresql import PostgreSQLEventStore


async def commands(side: Lib | Raw, streams: list[UUID], per_worker: int, workers: int) -> float:
    async def worker(n: int) -> int:
        for i in range(per_worker):
            await side.command(streams[(n + i * workers) % len(streams)])
        return per_worker

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return workers * per_worker / (time.perf_counter() - start)


def record_telemetry() -> None:
    """An OpenTelemetry SDK recording every span (batched, then dropped: the export itself
    is the collector's cost) and every metric, for the library side only."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from eventsource.observability import configure_telemetry

    class Drop(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    configure_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)


async def main(quick: bool, telemetry: bool = False) -> int:
    if telemetry:
        record_telemetry()
    scale = 10 if quick else 1
    repeats = 3 if quick else 5
    schema = f"eventsource_bench_{os.getpid()}"
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, pool_size=16, max_overflow=4
    )
    await store.create_schema()
    pool = await asyncpg.create_pool(URL, min_size=16, max_size=20, reset=keep_session)
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

    recording = ", library with an OpenTelemetry SDK recording" if telemetry else ""
    print_table(
        f"PostgreSQLEventStore vs raw asyncpg (median of {repeats} interleaved runs{recording})",
        results,
    )
    return 0 if missed_total == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--telemetry", action="store_true", help="record spans and metrics with the SDK"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick, args.telemetry)))
