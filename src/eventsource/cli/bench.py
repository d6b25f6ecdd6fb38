"""`eventsource bench [--quick]`: a short self-check of the store at `--url`: append and read
throughput, latency percentiles and client CPU per operation, and a command loop (load a
stream, append one event at its version). It answers "is this deployment about as fast as it
should be?"; the comparisons against raw drivers are `benchmarks/`.

It never writes into the application's data and leaves nothing behind, so it runs only
where it can throw its own data away:

- PostgreSQL: in a schema of its own (`eventsource_bench_<random>`) in the URL's database,
  dropped at the end (the URL's role needs CREATE on the database; else it refuses);
- SQLite: in a file of its own beside the URL's file (same disk), deleted at the end;
- `memory://`: in this process.

Other stores (NATS, gRPC) are refused: their events cannot be deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from uuid import UUID, uuid4

from eventsource.cli._ops import CommandError, Output, add_common_options, runner, store_url
from eventsource.config import create_event_store, parse_database_url
from eventsource.events import DomainEvent, EventRegistry
from eventsource.stores import EventStore, ReadOptions

__all__ = ["add_parser"]

_PROG = "eventsource bench"
_TYPE = "EventsourceBench"


class BenchTicked(DomainEvent, registry=None):
    """The event the bench appends (in a registry of its own: never in the application's)."""

    event_type: str = "EventsourceBenchTicked"
    note: str
    count: int


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "bench",
        help="a short self-check of the store's speed (appends, reads, a command loop)",
        description="Measure appends, reads and a command loop against the store at --url, in "
        "data of its own that it deletes afterwards (PostgreSQL: a schema of its own; SQLite: "
        "a file beside the URL's; memory://). Not a replacement for benchmarks/.",
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds instead of ~30")
    add_common_options(parser)
    parser.set_defaults(handler=runner(_PROG, _bench))


@contextlib.asynccontextmanager
async def _scratch_store(
    url: str, registry: EventRegistry
) -> AsyncIterator[tuple[EventStore, str]]:
    """A store on the URL's server or disk, in data of its own, removed afterwards; and
    where it is, for people."""
    database = parse_database_url(url)
    if database.backend == "memory":
        async with create_event_store(url, registry=registry) as store:
            yield store, database.description
    elif database.backend == "sqlite":
        name = _scratch_file(database.path)
        try:
            async with create_event_store(f"sqlite:///{name}", registry=registry) as store:
                yield store, parse_database_url(f"sqlite:///{name}").description
        finally:
            for leftover in (name, f"{name}-wal", f"{name}-shm", f"{name}-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
    elif database.backend == "postgresql":
        schema = f"eventsource_bench_{uuid4().hex[:12]}"
        store = create_event_store(url, registry=registry, schema=schema)
        try:
            await store.create_schema()  # type: ignore[attr-defined]
            yield store, parse_database_url(url, schema=schema).description
        finally:
            await _drop_schema(store, schema)
            await store.close()
    else:
        raise CommandError(
            f"bench runs on PostgreSQL, SQLite and memory:// stores only: it cannot delete "
            f"what it would write to a {database.backend} store"
        )


def _scratch_file(path: str) -> str:
    """An empty file beside `path` (in the temporary directory for `:memory:`)."""
    folder = Path(tempfile.gettempdir()) if path == ":memory:" else Path(path).resolve().parent
    if not folder.is_dir():
        raise CommandError(f"cannot bench beside {path}: {folder} is not a directory")
    handle, name = tempfile.mkstemp(prefix="eventsource-bench-", suffix=".db", dir=folder)
    os.close(handle)
    return name


async def _drop_schema(store: EventStore, schema: str) -> None:
    from sqlalchemy import text

    from eventsource._internal.sql import quote_identifier

    async with store.engine.begin() as connection:  # type: ignore[attr-defined]
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))


class _Timings:
    """Wall time of each operation, and the process's CPU time for all of them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seconds: list[float] = []
        self.events = 0
        self._cpu = 0.0

    async def run(self, operation: Callable[[], Awaitable[int]], times: int) -> None:
        cpu = time.process_time()
        for _ in range(times):
            start = time.perf_counter()
            self.events += await operation()
            self.seconds.append(time.perf_counter() - start)
        self._cpu += time.process_time() - cpu

    def row(self) -> list[object]:
        total = sum(self.seconds) or 1e-9
        ordered = sorted(self.seconds)
        quantiles = statistics.quantiles(ordered, n=100) if len(ordered) > 1 else ordered * 99

        def ms(seconds: float) -> float:
            return round(seconds * 1000, 3)

        return [
            self.name,
            len(self.seconds),
            self.events,
            round(self.events / total, 1),
            ms(quantiles[49]),
            ms(quantiles[94]),
            ms(quantiles[98]),
            round(self._cpu * 1_000_000 / max(len(self.seconds), 1), 1),
        ]


_COLUMNS = (
    "Workload",
    "Operations",
    "Events",
    "Events per second",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "Client CPU us per operation",
)


async def _bench(args: argparse.Namespace, out: Output) -> int:
    url = store_url(args)
    registry = EventRegistry()
    registry.register(BenchTicked)
    singles, batches, commands = (200, 20, 200) if args.quick else (2000, 200, 2000)
    results: list[_Timings] = []
    async with _scratch_store(url, registry) as (store, where):
        results.append(await _appends(store, singles))
        results.append(await _batch_appends(store, batches))
        long_stream = await _long_stream(store, 1000 if args.quick else 10_000)
        results.append(await _reads(store, long_stream, 20 if args.quick else 50))
        results.append(await _feed(store, 3 if args.quick else 5))
        results.append(await _commands(store, commands))
    out.table(_COLUMNS, [timings.row() for timings in results], title=f"{_PROG}: {where}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    if load is not None:
        out.message(
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; the bench's own "
            f"data ({where}) was deleted"
        )
    return 0


def _tick(count: int) -> BenchTicked:
    return BenchTicked(note="x" * 40, count=count)


async def _appends(store: EventStore, times: int) -> _Timings:
    timings = _Timings("append 1 event")

    async def append() -> int:
        await store.append_events(uuid4(), _TYPE, [_tick(1)], 0)
        return 1

    await timings.run(append, times)
    return timings


async def _batch_appends(store: EventStore, times: int) -> _Timings:
    timings = _Timings("append 100 events")

    async def append() -> int:
        await store.append_events(uuid4(), _TYPE, [_tick(n) for n in range(100)], 0)
        return 100

    await timings.run(append, times)
    return timings


async def _long_stream(store: EventStore, length: int) -> UUID:
    stream = uuid4()
    for start in range(0, length, 500):
        events = [_tick(n) for n in range(start, min(length, start + 500))]
        await store.append_events(stream, _TYPE, events, start)
    return stream


async def _reads(store: EventStore, stream: UUID, times: int) -> _Timings:
    timings = _Timings("read a stream")

    async def read() -> int:
        return len([stored.event async for stored in store.read_stream(stream)])

    await timings.run(read, times)
    return timings


async def _feed(store: EventStore, times: int) -> _Timings:
    timings = _Timings("read the feed")

    async def read() -> int:
        return len([stored.event async for stored in store.read_all(ReadOptions())])

    await timings.run(read, times)
    return timings


async def _commands(store: EventStore, times: int) -> _Timings:
    """Load a stream and append one event at its version: what a command handler does."""
    timings = _Timings("command loop")
    streams = [uuid4() for _ in range(10)]
    for stream in streams:
        await store.append_events(stream, _TYPE, [_tick(0)], 0)
    turn = 0

    async def command() -> int:
        nonlocal turn
        stream = streams[turn % len(streams)]
        turn += 1
        loaded = [stored.event async for stored in store.read_stream(stream)]
        await store.append_events(stream, _TYPE, [_tick(len(loaded))], len(loaded))
        return 1

    await timings.run(command, times)
    return timings
