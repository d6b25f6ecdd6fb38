"""PostgreSQLEventStore against two raw asyncpg baselines, in the same run.

    uv run python benchmarks/postgresql.py            # all workloads (several minutes)
    uv run python benchmarks/postgresql.py --quick    # smaller sizes, 3 repeats (--repeats N)
    uv run python benchmarks/postgresql.py --telemetry  # library with an OpenTelemetry SDK
    uv run python benchmarks/postgresql.py --rss 1000000  # peak RSS of a catch-up, per side

Three sides per workload (`_pg_sides`), each run in turn (the order rotated every round),
median of the rounds:
* library: the public API (AggregateRepository, PostgreSQLEventStore, pydantic events);
* same schema: raw asyncpg running the library's own statements on its table (recorded from
  the library when the run starts, so it follows changes to them) with json.dumps/json.loads:
  the ratio to it is the library's Python cost;
* minimal: raw asyncpg on the minimal hand-written design of DESIGN.md ("Performance targets"):
  what users compare with; the targets refer to it.

Workloads: a command (load + decide + append one event) at concurrency 1 and 16; loading a
10,000-event aggregate; a catch-up read of the global feed; bulk appends of 100 events; 8
writers of 2-event transactions while a live reader follows the feed (each side reads with its
own feed query; events a reader never sees are counted as missed). Concurrency 16 runs
twice: with no reader anywhere (and the library also with `notify=False`), then with a live
reader per side, each side paying for its own: the library's in another process (`_wakeup`,
LISTEN + read_all, polling every 200 ms as a fallback), which gives the wake-up latency from
the return of a command to the moment that reader has the event; each raw side's polling
its own feed every 5 ms, as a design without NOTIFY must to deliver as promptly.

Every side's asyncpg pool skips the reset query on release (no extra round trip per checkout),
and the library keeps 16 connections for its statements (`max_connections=16`), as many as
the raw sides' pool has commands in flight at concurrency 16 (its default is 10).
Throughput ratios are library / baseline; for the load, library time / baseline time. The load
average at start and end is printed: the machine is shared, so compare ratios from one run.
Environment: EVENTSOURCE_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).
Every run works in its own schema and drops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
from _common import (
    URL,
    Lib,
    Line,
    fill,
    interleave_sides,
    keep_session,
    load_average,
    percentile,
    print_lines,
    registry,
)
from _pg_sides import Key, MinimalSide, SameSchemaSide, Side

from eventsource import AggregateCache
from eventsource.stores.postgresql import PostgreSQLEventStore

HERE = Path(__file__).parent
BASELINES = ["same schema", "minimal"]


async def commands(
    command: Callable[[UUID], Awaitable[object]], streams: list[UUID], per_worker: int, workers: int
) -> float:
    async def worker(n: int) -> None:
        for i in range(per_worker):
            await command(streams[(n + i * workers) % len(streams)])

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    return workers * per_worker / (time.perf_counter() - start)


class WakeUps:
    """The live reader process of `_wakeup` and the latencies of the library's commands."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.returned: dict[str, float] = {}
        self.process: asyncio.subprocess.Process | None = None
        self.reading: asyncio.Task[None] | None = None

    async def start(self, schema: str) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "_wakeup.py"),
            schema,
            stdout=asyncio.subprocess.PIPE,
            cwd=HERE,
        )
        assert self.process.stdout is not None
        ready = await asyncio.wait_for(self.process.stdout.readline(), 60)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the wake-up reader did not start: {ready!r}")
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            event_id, at = line.split()
            self.seen[event_id.decode()] = float(at)

    def command(self, lib: Lib) -> Callable[[UUID], Awaitable[None]]:
        async def command(aggregate_id: UUID) -> None:
            event_id = await lib.command(aggregate_id)
            self.returned[event_id.hex] = time.monotonic()

        return command

    async def latencies(self) -> tuple[list[float], int]:
        """Milliseconds from return to seen (negative when the reader had the event before
        the command returned to its caller), and how many events the reader had not seen
        10 s after the last command."""
        deadline = time.monotonic() + 10
        while set(self.returned) - set(self.seen) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        found = [(self.seen[k] - t) * 1000 for k, t in self.returned.items() if k in self.seen]
        return found, len(self.returned) - len(found)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        if self.reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.reading


async def commands_with_reader(
    side: Side, streams: list[UUID], per_worker: int, workers: int
) -> float:
    """`commands` while a reader task follows the side's feed every 5 ms (its own query)."""
    after = await side.start()
    stop = asyncio.Event()

    async def reader() -> None:
        nonlocal after
        while not stop.is_set():
            after, _keys = await side.follow(after)
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    try:
        return await commands(side.command, streams, per_worker, workers)
    finally:
        stop.set()
        await reading


async def writers_with_reader(side: Side, writers: int, appends: int) -> tuple[float, int]:
    """`writers` tasks each appending `appends` 2-event transactions while a reader follows
    the side's feed (every 5 ms). Returns events/s of the writers and the events the reader
    had not seen 30 s after the last append (a reader that skipped one never sees it)."""
    written: set[Key] = set()
    seen: set[Key] = set()
    stop = asyncio.Event()
    after = await side.start()

    async def writer() -> None:
        aggregate, version = uuid4(), 0
        for _ in range(appends):
            version, keys = await side.append_keyed(aggregate, version, [1, 1])
            written.update(keys)

    async def reader() -> None:
        nonlocal after
        deadline = None
        while True:
            after, keys = await side.follow(after)
            seen.update(keys)
            if stop.is_set():
                deadline = deadline or time.monotonic() + 30
                if written <= seen or time.monotonic() > deadline:
                    return
            await asyncio.sleep(0.005)

    reading = asyncio.create_task(reader())
    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - start
    stop.set()
    await reading
    return writers * appends * 2 / elapsed, len(written - seen)


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


async def run(
    quick: bool, rss: int | None, repeats: int | None = None, telemetry: bool = False
) -> int:
    scale = 10 if quick else 1
    repeats = repeats or (3 if quick else 5)
    schema = f"eventsource_bench_{os.getpid()}"
    started = load_average()
    # 16 connections for the store's statements, like the raw sides' pool (whose 16 commands
    # at concurrency 16 each have one); the pool's overflow holds the notifier's two.
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, max_connections=16, max_overflow=4
    )
    quiet_store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, notify=False, max_connections=16, max_overflow=4
    )
    await store.create_schema()
    pool = await asyncpg.create_pool(URL, min_size=16, max_size=24, reset=keep_session)
    lib, quiet = Lib(store), Lib(quiet_store)
    cached = Lib(store, cache=AggregateCache())  # opt-in: replays only what came since
    same = await SameSchemaSide.build(pool, lib)
    minimal = MinimalSide(pool, schema)
    await minimal.create()
    sides: dict[str, Side] = {"library": lib, "same schema": same, "minimal": minimal}
    wakeups = WakeUps()
    lines: list[Line] = []
    missed_total = 0
    try:
        if rss is not None:
            await rss_report(schema, rss, lib, minimal)
            return 0

        def line(
            name: str,
            unit: str,
            figures: dict[str, float],
            target: str,
            higher_is_better: bool = True,
            note: str = "",
        ) -> None:
            baselines = {b: figures[b] for b in BASELINES}
            lines.append(
                Line(name, unit, figures["library"], baselines, target, higher_is_better, note)
            )

        # 1. commands: load + decide + append 1 event, on 200 aggregates of 10 events each.
        # Every side has aggregates of its own: each side's commands lengthen only its own
        # streams, so every side loads streams of the same length (the library and the
        # same-schema side share a table, and shared streams would grow twice as fast).
        variants = ["library, notify=False", "library, cached"]
        streams = {n: [uuid4() for _ in range(200)] for n in [*sides, *variants]}
        for name, ids in streams.items():
            writer = minimal if name == "minimal" else lib
            for s in ids:
                await writer.append(s, 0, [1] * 10)
        per_worker = 400 // scale
        c1 = {
            n: (lambda s=s, n=n: commands(s.command, streams[n], per_worker, 1))
            for n, s in [*sides.items(), ("library, cached", cached)]
        }
        figures = await interleave_sides(repeats, c1)
        line("command, concurrency 1", "commands/s", figures, ">= 0.95x")
        cached_figures = dict(figures, library=figures["library, cached"])
        line("command, concurrency 1, AggregateCache (opt-in)", "commands/s", cached_figures, "")

        # Concurrency 16, twice. First with no reader anywhere (the library still sends its
        # coalesced NOTIFY; nobody listens). Then with a live reader per side, each paying for
        # its own: the library's in another process woken by LISTEN/NOTIFY (as a deployed
        # subscription is; it gives the wake-up latency), each raw side's polling its own feed
        # every 5 ms (what a hand-written design without NOTIFY does to deliver promptly).
        per_worker = 60 if not quick else 20
        quiet_streams = streams["library, notify=False"]
        c16 = {
            "library": lambda: commands(lib.command, streams["library"], per_worker, 16),
            "library, notify=False": lambda: commands(quiet.command, quiet_streams, per_worker, 16),
            "library, cached": lambda: commands(
                cached.command, streams["library, cached"], per_worker, 16
            ),
            **{
                n: (lambda s=s, n=n: commands(s.command, streams[n], per_worker, 16))
                for n, s in list(sides.items())[1:]
            },
        }
        # Warm-up, not timed: every side opens its connections for 16 commands at once
        # (the raw pool opened them at start; the stores open theirs on first use).
        for warm_up in c16.values():
            await warm_up()
        figures = await interleave_sides(repeats, c16)
        line("command, concurrency 16, no reader", "commands/s", figures, ">= 0.9x")
        quiet_figures = dict(figures, library=figures["library, notify=False"])
        line("command, concurrency 16, notify=False", "commands/s", quiet_figures, "")
        cached_figures = dict(figures, library=figures["library, cached"])
        line("command, concurrency 16, AggregateCache (opt-in)", "commands/s", cached_figures, "")

        await wakeups.start(schema)
        read = {
            "library": lambda: commands(wakeups.command(lib), streams["library"], per_worker, 16),
            **{
                n: (lambda s=s, n=n: commands_with_reader(s, streams[n], per_worker, 16))
                for n, s in list(sides.items())[1:]
            },
        }
        figures = await interleave_sides(repeats, read)
        latencies, unseen = await wakeups.latencies()
        await wakeups.stop()
        early = sum(1 for ms in latencies if ms < 0)
        clamped = [max(0.0, ms) for ms in latencies]
        note = (
            f"wake-up p50 {percentile(clamped, 0.5):.1f} ms, p99 "
            f"{percentile(clamped, 0.99):.1f} ms over {len(latencies)} events"
            f" ({early * 100 // max(1, len(latencies))}% read before their command returned:"
            " 0 ms)" + (f", {unseen} never seen" if unseen else "")
        )
        line(
            "command, concurrency 16, a live reader per side",
            "commands/s",
            figures,
            ">= 0.9x, p99 <= 20 ms",
            note=note,
        )

        # 2. load a 10,000-event aggregate
        big = uuid4()
        for _ in range(10):
            await lib.append(big, (await store.get_stream_version(big)), [1] * 1000)
            await minimal.append(big, (await minimal.load(big))[0], [1] * 1000)
        statements = await same.record_stream(big)

        async def load_ms(side: Side) -> float:
            start = time.perf_counter()
            version, total = await side.load(big)
            elapsed = (time.perf_counter() - start) * 1000
            assert (version, total) == (10_000, 10_000), (version, total)
            return elapsed

        figures = await interleave_sides(
            repeats, {n: (lambda s=s: load_ms(s)) for n, s in sides.items()}
        )
        line(
            "load a 10,000-event aggregate",
            "ms",
            figures,
            "<= 2x time",
            higher_is_better=False,
            note=f"the library read it in {statements} statement(s)",
        )

        # 3. catch-up read of the global feed from its start
        events = 100_000 // scale
        have = await pool.fetchval(f"SELECT count(*) FROM {store.table}")
        await fill(lib, max(0, events - have + 1000))
        have = await pool.fetchval(f"SELECT count(*) FROM {minimal.table}")
        await fill(minimal, max(0, events - have + 1000))
        await pool.execute(f"ANALYZE {store.table}")
        await pool.execute(f"ANALYZE {minimal.table}")

        async def catch_up(side: Side) -> float:
            start = time.perf_counter()
            _, count = await side.catch_up(events)
            assert count == events, (count, events)
            return count / (time.perf_counter() - start)

        figures = await interleave_sides(
            repeats, {n: (lambda s=s: catch_up(s)) for n, s in sides.items()}
        )
        line(f"catch-up read of {events:,} events", "events/s", figures, ">= 0.5x")

        # 4. bulk append: appends of 100 events, one after the other
        appends = 1000 // scale

        async def bulk(side: Side) -> float:
            start = time.perf_counter()
            for _ in range(appends):
                await side.append(uuid4(), 0, [1] * 100)
            return appends * 100 / (time.perf_counter() - start)

        figures = await interleave_sides(
            repeats, {n: (lambda s=s: bulk(s)) for n, s in sides.items()}
        )
        line(f"bulk append, {appends:,} x 100 events", "events/s", figures, ">= 0.85x")

        # 5. 8 writers of 2-event transactions while a live reader follows the feed
        per_writer = 100 if not quick else 30
        missed: dict[str, int] = dict.fromkeys(sides, 0)

        def writing(name: str, side: Side) -> Callable[[], Awaitable[float]]:
            async def once() -> float:
                rate, lost = await writers_with_reader(side, 8, per_writer)
                missed[name] += lost
                return rate

            return once

        figures = await interleave_sides(repeats, {n: writing(n, s) for n, s in sides.items()})
        missed_total = sum(missed.values())
        note = "missed: " + ", ".join(f"{n} {m}" for n, m in missed.items())
        line(
            "8 writers x 2-event appends + live reader",
            "events/s",
            figures,
            ">= 0.9x, 0 missed",
            note=note,
        )
    finally:
        await wakeups.stop()
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
        await quiet_store.close()
        await store.close()

    print_lines(
        f"PostgreSQLEventStore vs raw asyncpg (median of {repeats} interleaved runs"
        f"{', quick sizes' if quick else ''}"
        f"{', library with an OpenTelemetry SDK recording' if telemetry else ''}"
        f"; load average at start {started}, at end "
        f"{load_average()})",
        BASELINES,
        lines,
    )
    return 0 if missed_total == 0 else 1


async def rss_report(schema: str, events: int, lib: Lib, minimal: MinimalSide) -> None:
    """Peak RSS of a catch-up of `events` events, each side in a fresh process (`_rss`)."""
    await fill(lib, events)
    await fill(minimal, events)
    print(f"Catch-up of {events:,} events, one fresh process per side (load {load_average()})\n")
    print("| side | RSS before | peak RSS | events/s |")
    print("|---|---|---|---|")
    for side in ("library", "same-schema", "minimal"):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "_rss.py"),
            side,
            schema,
            str(events),
            stdout=asyncio.subprocess.PIPE,
            cwd=HERE,
        )
        out, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"the {side} catch-up failed ({process.returncode})")
        before, peak, rate = out.split()
        print(f"| {side} | {float(before):.0f} MiB | {float(peak):.0f} MiB | {float(rate):,.0f} |")
    print()


async def main(quick: bool, telemetry: bool, rss: int | None, repeats: int | None) -> int:
    if telemetry:
        record_telemetry()
    return await run(quick, rss, repeats, telemetry)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="rounds per workload (default 5, quick 3)"
    )
    parser.add_argument(
        "--telemetry", action="store_true", help="record spans and metrics with the SDK"
    )
    parser.add_argument(
        "--rss", type=int, metavar="N", help="only: peak RSS of a catch-up of N events per side"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick, args.telemetry, args.rss, args.repeats)))
