"""SQLiteEventStore against a raw aiosqlite baseline, in the same run.

    uv run python benchmarks/sqlite.py            # all workloads
    uv run python benchmarks/sqlite.py --quick    # smaller sizes, 3 repeats (--repeats N)
    EVENTSOURCE_BENCH_SQLITE_DIR=/some/disk uv run python benchmarks/sqlite.py

Three sides per workload (`_sqlite_sides`), each run in turn (the order rotated every round),
median of the rounds (5; 3 with --quick):
* library: `SQLiteEventStore` and `AggregateRepository`, pydantic events;
* same schema: aiosqlite on the library's table and indexes, its statements written by hand,
  json.loads: the library's Python cost, apart from the cost of its row;
* minimal: aiosqlite on `(gp INTEGER PRIMARY KEY, stream_id, version, event_type, payload)`,
  UNIQUE (stream_id, version), payload = the domain fields: what a user writes by hand.
Every side uses the library's PRAGMAs (WAL, synchronous = FULL, busy_timeout 10 s) and writes
in BEGIN IMMEDIATE. Each side has a file of its own, in a fresh temporary directory
(EVENTSOURCE_BENCH_SQLITE_DIR or the system's), removed at the end.
With synchronous = FULL every commit waits for the disk, so single-event appends mostly
measure the disk. The note column gives the process CPU time of the library's runs (both
threads: the event loop's and aiosqlite's) over each baseline's (median per run, lower is
better): steadier than throughput on a busy machine.

Workloads: single-event appends one after the other; `AggregateRepository.execute` (load,
decide, append one event) over 200 aggregates; appends of 100 events per call; loading a
10,000-event aggregate; a `read_all` catch-up of 100,000 events; 4 writer tasks, each with a
connection of its own (a store of its own on the library side), appending to one file at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

from _common import (
    Lib,
    Line,
    fill,
    interleave_sides,
    load_average,
    per_second,
    print_lines,
    registry,
)
from _sqlite_sides import MinimalSide, SameSchemaSide, Side

from eventsource.stores.sqlite import SQLiteEventStore

BASELINES = ["same schema", "minimal"]


async def run(quick: bool, repeats: int | None = None) -> None:
    scale = 5 if quick else 1
    repeats = repeats or (3 if quick else 5)
    started = load_average()
    directory = tempfile.mkdtemp(
        prefix="eventsource-bench-", dir=os.environ.get("EVENTSOURCE_BENCH_SQLITE_DIR")
    )
    library_path = os.path.join(directory, "library.db")
    minimal_path = os.path.join(directory, "minimal.db")
    same_path = os.path.join(directory, "same.db")
    lib = Lib(SQLiteEventStore(library_path, registry=registry))
    opened: list[Side] = [lib]
    lines: list[Line] = []
    try:
        minimal = await MinimalSide.open(minimal_path)
        opened.append(minimal)
        same = await SameSchemaSide.open(same_path)
        opened.append(same)
        sides: dict[str, Side] = {"library": lib, "same schema": same, "minimal": minimal}

        async def measure(
            name: str,
            unit: str,
            work: Callable[[Side], Awaitable[float]],
            target: str = "",
            higher_is_better: bool = True,
        ) -> None:
            cpu: dict[str, list[float]] = {n: [] for n in sides}

            async def timed(n: str, side: Side) -> float:
                start = time.process_time()
                figure = await work(side)
                cpu[n].append(time.process_time() - start)
                return figure

            figures = await interleave_sides(
                repeats, {n: (lambda n=n, s=s: timed(n, s)) for n, s in sides.items()}
            )
            baselines = {b: figures[b] for b in BASELINES}
            medians = {n: statistics.median(v) for n, v in cpu.items()}
            note = "CPU " + ", ".join(
                f"{medians['library'] / medians[b]:.2f}x {b}" for b in BASELINES
            )
            lines.append(
                Line(name, unit, figures["library"], baselines, target, higher_is_better, note)
            )

        # 1. single-event appends, one after the other, round robin over 200 streams
        streams = [uuid4() for _ in range(200)]
        versions: dict[tuple[str, UUID], int] = {}
        for s in streams:
            for n, side in sides.items():
                await side.append(s, 0, [1] * 10)
                versions[(n, s)] = 10
        appends = 400 // scale

        async def single(side: Side) -> float:
            key = next(n for n, s in sides.items() if s is side)

            async def work() -> None:
                for i in range(appends):
                    stream = streams[i % len(streams)]
                    versions[(key, stream)] = await side.append(
                        stream, versions[(key, stream)], [1]
                    )

            return await per_second(appends, work)

        await measure(f"single-event append, {appends} in a row", "appends/s", single, ">= 0.9x")

        # 2. commands: load + decide + append one event, over the 200 aggregates
        commands = 400 // scale

        async def command(side: Side) -> float:
            async def work() -> None:
                for i in range(commands):
                    await side.command(streams[i % len(streams)])

            return await per_second(commands, work)

        await measure(
            "AggregateRepository.execute, 200 aggregates", "commands/s", command, ">= 0.85x"
        )

        # 3. appends of 100 events per call
        batches = 200 // scale

        async def batch(side: Side) -> float:
            async def work() -> None:
                for _ in range(batches):
                    await side.append(uuid4(), 0, [1] * 100)

            return await per_second(batches * 100, work)

        await measure(f"batch append, {batches} x 100 events", "events/s", batch, ">= 0.8x")

        # 4. load a 10,000-event aggregate
        big = uuid4()
        for side in sides.values():
            await side.append(big, 0, [1] * 10_000)

        async def load_ms(side: Side) -> float:
            start = time.perf_counter()
            version, total = await side.load(big)
            elapsed = (time.perf_counter() - start) * 1000
            assert (version, total) == (10_000, 10_000), (version, total)
            return elapsed

        await measure("load a 10,000-event aggregate", "ms", load_ms, "<= 2x time", False)

        # 5. read_all catch-up from the start of the feed
        events = 100_000 // scale
        for side in sides.values():
            _, have = await side.catch_up(events)
            await fill(side, events - have + 1000)

        async def catch_up(side: Side) -> float:
            start = time.perf_counter()
            _, count = await side.catch_up(events)
            assert count == events, (count, events)
            return count / (time.perf_counter() - start)

        await measure(f"read_all catch-up of {events:,} events", "events/s", catch_up, ">= 0.5x")

        # 6. 4 writer tasks, a connection each, 1-event appends to streams of their own
        per_writer = 100 // scale

        async def writers(side: Side) -> float:
            own: list[Side]
            if isinstance(side, Lib):
                stores = [SQLiteEventStore(library_path, registry=registry) for _ in range(4)]
                for store in stores:
                    await store.connect()
                own = [Lib(store) for store in stores]
            elif isinstance(side, SameSchemaSide):
                own = [await SameSchemaSide.open(same_path) for _ in range(4)]
            else:
                own = [await MinimalSide.open(minimal_path) for _ in range(4)]

            async def writer(each: Side) -> None:
                aggregate, version = uuid4(), 0
                for _ in range(per_writer):
                    version = await each.append(aggregate, version, [1])

            try:
                start = time.perf_counter()
                await asyncio.gather(*(writer(each) for each in own))
                return 4 * per_writer / (time.perf_counter() - start)
            finally:
                for each in own:
                    await each.close()

        await measure("4 writer tasks on one file", "appends/s", writers, ">= 0.9x")
    finally:
        for side in opened:
            await side.close()
        shutil.rmtree(directory, ignore_errors=True)

    print_lines(
        f"SQLiteEventStore vs raw aiosqlite (median of {repeats} interleaved runs"
        f"{', quick sizes' if quick else ''}; load average at start {started}, at end "
        f"{load_average()})",
        BASELINES,
        lines,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="rounds per workload (default 5, quick 3)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.quick, args.repeats))
    sys.exit(0)
