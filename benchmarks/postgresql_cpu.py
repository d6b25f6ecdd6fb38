"""CPU time per operation: the library against the same-schema and minimal raw sides.

    uv run python benchmarks/postgresql_cpu.py            # about a minute
    uv run python benchmarks/postgresql_cpu.py --ops 200  # fewer operations per round

`postgresql.py` measures throughput, which on a shared machine follows the neighbours' load
as much as our code. This one measures what an operation costs in CPU, which the load
hardly changes: the client's CPU time (`time.process_time`) and the CPU time of the
PostgreSQL backends the side used (read from /proc, so PostgreSQL must run on this machine
and its processes be readable: as root or as the postgres user). Each side runs one
operation at a time on one connection (the library with `max_connections=1`; its notifier's
connections count too), the order of the sides rotated every round, median of the rounds.

Workloads: a command (load + decide + append one event) on streams of 10 events, an append
of 1 event, an append of 100 events; then commands 16 at a time (each side with 16
connections: what the throughput benchmark's concurrency-16 line costs per command).
Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from uuid import UUID, uuid4

import asyncpg
from _common import URL, Lib, keep_session, load_average, registry
from _pg_sides import MinimalSide, SameSchemaSide, Side

from eventsource.stores.postgresql import PostgreSQLEventStore

_TICK = os.sysconf("SC_CLK_TCK")
_METHODS = ("fetch", "fetchrow", "fetchval", "execute", "executemany")


@contextlib.contextmanager
def backends() -> Iterator[set[int]]:
    """The server process ids of every asyncpg connection that runs a statement in the block."""
    pids: set[int] = set()
    cls = asyncpg.connection.Connection
    saved = {name: getattr(cls, name) for name in _METHODS}

    def wrap(original: Callable[..., object]) -> Callable[..., object]:
        def recorder(self: asyncpg.Connection, *args: object, **kwargs: object) -> object:
            pids.add(self.get_server_pid())
            return original(self, *args, **kwargs)

        return recorder

    for name, original in saved.items():
        setattr(cls, name, wrap(original))
    try:
        yield pids
    finally:
        for name, original in saved.items():
            setattr(cls, name, original)


def server_cpu(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) each backend has used so far (0 for one that is gone)."""
    used: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            used[pid] = 0.0
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return used


async def measure(operation: Callable[[int], Awaitable[object]], ops: int) -> tuple[float, float]:
    """(client, server) CPU microseconds per operation over `ops` operations."""
    with backends() as pids:
        for n in range(3):  # warm up, and learn which backends the side uses
            await operation(n)
        before = server_cpu(pids)
        start = time.process_time()
        for n in range(ops):
            await operation(n)
        client = time.process_time() - start
        after = server_cpu(pids)
    server = sum(after[pid] - before.get(pid, 0.0) for pid in after)
    return client * 1e6 / ops, server * 1e6 / ops


async def open_sides(
    schema: str, connections: int
) -> tuple[PostgreSQLEventStore, asyncpg.Pool, dict[str, Side]]:
    """The three sides, each with `connections` connections (the library's store, the raw
    sides' pool), on the tables of `schema`."""
    store = PostgreSQLEventStore.from_url(
        URL, schema=schema, registry=registry, max_connections=connections
    )
    await store.create_schema()
    pool = await asyncpg.create_pool(
        URL, min_size=connections, max_size=connections, reset=keep_session
    )
    lib = Lib(store)
    sides: dict[str, Side] = {
        "library": lib,
        "same schema": await SameSchemaSide.build(pool, lib),
        "minimal": MinimalSide(pool, schema),
    }
    return store, pool, sides


async def run(ops: int, repeats: int) -> None:
    schema = f"eventsource_bench_cpu_{os.getpid()}"
    started = load_average()
    store, pool, sides = await open_sides(schema, 1)
    # The same sides with 16 connections each, for the commands run 16 at a time.
    wide_store, wide_pool, wide = await open_sides(schema, 16)
    minimal = sides["minimal"]
    assert isinstance(minimal, MinimalSide)
    await minimal.create()
    streams: dict[str, list[UUID]] = {name: [uuid4() for _ in range(50)] for name in sides}
    try:
        for name, side in sides.items():
            for stream in streams[name]:
                await side.append(stream, 0, [1] * 10)

        def command(side: Side, name: str) -> Callable[[int], Awaitable[object]]:
            return lambda n: side.command(streams[name][n % 50])

        def append(size: int) -> Callable[[Side, str], Callable[[int], Awaitable[object]]]:
            return lambda side, name: lambda n: side.append(uuid4(), 0, [1] * size)

        def sixteen(side: Side, name: str) -> Callable[[int], Awaitable[object]]:
            side = wide[name]  # 16 connections; 16 commands on 16 different streams a call
            return lambda n: asyncio.gather(
                *(side.command(streams[name][(16 * n + k) % 50]) for k in range(16))
            )

        # (title, calls per round, operation maker, operations per call)
        workloads = [
            ("command (load + decide + append 1 event)", ops, command, 1),
            ("append of 1 event (new stream)", ops, append(1), 1),
            ("append of 100 events (new stream)", max(10, ops // 20), append(100), 1),
            ("command, 16 at a time (per command)", max(10, ops // 16), sixteen, 16),
        ]
        names = list(sides)
        print(
            f"CPU time per operation, median of {repeats} rounds (load average at start"
            f" {started})\n"
        )
        rows = []
        for title, count, make, per_call in workloads:
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            for r in range(repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    client, server = await measure(make(sides[name], name), count)
                    figures[name].append((client / per_call, server / per_call))
            rows.append((title, figures))
        print("| workload | side | client us | server us | total us | total vs minimal |")
        print("|---|---|---|---|---|---|")
        for title, figures in rows:
            totals = {
                name: (
                    statistics.median(c for c, _ in values),
                    statistics.median(s for _, s in values),
                )
                for name, values in figures.items()
            }
            base = sum(totals["minimal"])
            for name, (client, server) in totals.items():
                ratio = (client + server) / base if base else float("nan")
                print(
                    f"| {title} | {name} | {client:,.0f} | {server:,.0f} |"
                    f" {client + server:,.0f} | {ratio:.2f}x |"
                )
        print(f"\nload average at end {load_average()}")
    finally:
        await pool.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await pool.close()
        await wide_pool.close()
        await store.close()
        await wide_store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=600, help="operations per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds")
    args = parser.parse_args()
    asyncio.run(run(args.ops, args.repeats))
    sys.exit(0)
