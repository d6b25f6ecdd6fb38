"""The store service against the same store used directly, in the same run.

    uv run python benchmarks/grpc_service.py            # all workloads
    uv run python benchmarks/grpc_service.py --quick    # smaller sizes

A PostgreSQL store in a schema of its own is used two ways: directly by this process
(`PostgreSQLEventStore`), and through `eventsource serve` running in a child process over the
same schema, reached with `GrpcEventStore` on a loopback port. Workloads:

1. Commands, concurrency 1: `AggregateRepository.execute` (load, one event, save) on
   aggregates of 10 events.
2. The same with 16 commands at a time on 16 aggregates.
3. Catch-up: read the whole feed (decoding each event) from the start.

Ratios are service / direct throughput, the median of interleaved repeats; the machine's load
average is printed with them. Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import asyncpg
from _common import (
    URL,
    Counter,
    Line,
    interleave_sides,
    load_average,
    per_second,
    print_lines,
    registry,
)

from eventsource import AggregateRepository, EventStore, GrpcEventStore, ReadOptions
from eventsource.stores.postgresql import PostgreSQLEventStore


async def _start_service(schema: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from eventsource.cli import main; sys.exit(main())",
        "serve",
        "--url",
        f"{URL}?schema={schema}",
        "--listen",
        "127.0.0.1:0",
        "--no-auth",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    banner = (await process.stderr.readline()).decode()
    if "serving" not in banner:
        raise RuntimeError(f"eventsource serve did not start: {banner}")
    return process, int(banner.split(" on 127.0.0.1:")[1].split(" ")[0])


async def _seed(store: EventStore, aggregates: int) -> list[UUID]:
    repository = AggregateRepository(store, Counter)
    ids = [uuid4() for _ in range(aggregates)]
    for aggregate_id in ids:
        counter = repository.create_new(aggregate_id)
        for _ in range(10):
            counter.increment(1)
        await repository.save(counter)
    return ids


def _commands(
    store: EventStore, ids: list[UUID], count: int, concurrency: int
) -> Callable[[], Awaitable[float]]:
    repository = AggregateRepository(store, Counter, single_flight=False)

    async def run() -> float:
        async def worker(aggregate_id: UUID, n: int) -> None:
            for _ in range(n):
                await repository.execute(aggregate_id, lambda c: c.increment(1))

        share = count // concurrency

        async def all_workers() -> None:
            await asyncio.gather(*(worker(ids[w], share) for w in range(concurrency)))

        return await per_second(share * concurrency, all_workers)

    return run


def _catch_up(store: EventStore, total: int) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        async def read() -> None:
            seen = 0
            async for stored in store.read_all(ReadOptions(batch_size=1000)):
                stored.event  # noqa: B018 - decode, as a projection would
                seen += 1
            assert seen == total, (seen, total)

        return await per_second(total, read)

    return run


async def main(quick: bool) -> None:
    schema = f"es_bench_grpc_{uuid4().hex[:8]}"
    direct = PostgreSQLEventStore.from_url(URL, schema=schema, registry=registry)
    await direct.create_schema()
    process, port = await _start_service(schema)
    service = GrpcEventStore(f"127.0.0.1:{port}", registry=registry)
    repeats = 3 if quick else 5
    commands = 200 if quick else 1000
    try:
        ids = await _seed(direct, 32)
        filler = AggregateRepository(direct, Counter)
        for _ in range(10 if quick else 40):  # a feed of some size for catch-up
            counter = filler.create_new(uuid4())
            for _ in range(500):
                counter.increment(1)
            await filler.save(counter)
        total = await direct.count_events()
        lines: list[Line] = []
        for title, concurrency in (("command, concurrency 1", 1), ("command, 16 at a time", 16)):
            medians = await interleave_sides(
                repeats,
                {
                    "direct": _commands(direct, ids[:16], commands, concurrency),
                    "service": _commands(service, ids[16:], commands, concurrency),
                },
            )
            lines.append(
                Line(title, "commands/s", medians["service"], {"direct": medians["direct"]})
            )
            total += commands * repeats * 2
        total = await direct.count_events()
        medians = await interleave_sides(
            repeats, {"direct": _catch_up(direct, total), "service": _catch_up(service, total)}
        )
        lines.append(
            Line(
                f"catch-up of {total:,} events",
                "events/s",
                medians["service"],
                {"direct": medians["direct"]},
            )
        )
        print(f"load average: {load_average()}\n")
        print_lines(
            "gRPC service (child process) vs the same store used directly", ["direct"], lines
        )
    finally:
        await service.close()
        process.send_signal(signal.SIGTERM)
        await process.wait()
        await direct.close()
        conn = await asyncpg.connect(URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    asyncio.run(main(parser.parse_args().quick))
