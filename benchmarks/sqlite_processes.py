"""Fairness of writers in several processes sharing one SQLite file, against raw aiosqlite.

    uv run python benchmarks/sqlite_processes.py [--processes 2] [--seconds 3] [--rounds 3]

Each process opens a writer on the same file and, from a common start time, appends one event
at a time to a stream of its own for the given seconds. Two sides, each with files of its
own, run in turn (the order rotated every round):
* library: a `SQLiteEventStore` per process;
* minimal: raw aiosqlite on the minimal table (`_sqlite_sides.MinimalSide`), SQLite's own
  busy handler (busy_timeout 10 s) deciding who gets the lock next.
Each process makes one warm-up append before the common start. Reported per round and side:
each process's appends/s, the fairness (slowest process's rate over the fastest's: 1.00 = a
fair share each), the p99 and the slowest append over all processes; then the medians over the
rounds and the library's total rate over the minimal side's. SQLite lets one writer in at a
time, so what decides the shares is how a waiting writer comes back for the lock
(`begin_immediate`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from uuid import uuid4

from _common import Incremented, load_average, percentile, registry
from _sqlite_sides import MinimalSide

from eventsource.stores.sqlite import SQLiteEventStore

SIDES = ("library", "minimal")


async def writer(side: str, path: str, start: float, seconds: float) -> dict[str, object]:
    """One process's appends; its rate and every append's latency (ms)."""
    latencies: list[float] = []
    stream, version = uuid4(), 0
    if side == "library":
        store = SQLiteEventStore(path, registry=registry)
        await store.connect()

        async def append() -> int:
            events = [Incremented(amount=1)]
            return (await store.append_events(stream, "Counter", events, version)).new_version

        close = store.close
    else:
        raw = await MinimalSide.open(path)

        async def append() -> int:
            return await raw.append(stream, version, [1])

        close = raw.close
    try:
        # A warm-up append first (to a stream of its own: `append` reads `stream` and
        # `version` when called): a process's first append pays one-time costs (the codec's
        # per-class serializers, statement preparation), not the steady state compared here.
        await append()
        stream, version = uuid4(), 0
        await asyncio.sleep(max(0.0, start - time.time()))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            begun = time.perf_counter()
            version = await append()
            latencies.append((time.perf_counter() - begun) * 1000)
    finally:
        await close()
    return {"rate": version / seconds, "latencies": latencies}


async def round_of(side: str, processes: int, seconds: float) -> dict[str, float]:
    directory = tempfile.mkdtemp(
        prefix="eventsource-bench-", dir=os.environ.get("EVENTSOURCE_BENCH_SQLITE_DIR")
    )
    path = os.path.join(directory, "shared.db")
    try:
        if side == "library":
            await SQLiteEventStore(path, registry=registry).close()
        else:
            await (await MinimalSide.open(path)).close()
        start = time.time() + 1.0
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--child",
                side,
                path,
                str(start),
                str(seconds),
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(processes)
        ]
        outputs = await asyncio.gather(*(w.communicate() for w in workers))
        reports = [json.loads(out) for out, _ in outputs]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    rates = [float(r["rate"]) for r in reports]
    latencies = [float(ms) for r in reports for ms in r["latencies"]]
    figures = {f"rate {n}": rate for n, rate in enumerate(rates)}
    figures.update(
        total=sum(rates),
        fairness=min(rates) / max(rates),
        p99=percentile(latencies, 0.99),
        slowest=max(latencies),
    )
    return figures


async def main(processes: int, seconds: float, rounds: int) -> None:
    started = load_average()
    results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    print(
        f"{processes} processes appending one event at a time to one file for {seconds:g} s,"
        f" {rounds} rounds (load average at start {started})"
    )
    for n in range(rounds):
        for side in SIDES[n % 2 :] + SIDES[: n % 2]:
            figures = await round_of(side, processes, seconds)
            results[side].append(figures)
            shares = ", ".join(f"{figures[f'rate {p}']:,.0f}" for p in range(processes))
            print(
                f"  round {n + 1} {side:8}: {shares} appends/s per process;"
                f" fairness {figures['fairness']:.2f}, p99 {figures['p99']:.1f} ms,"
                f" slowest {figures['slowest']:.1f} ms"
            )
    print("\n| side | total appends/s | fairness (min/max rate) | p99 ms | slowest ms |")
    print("|---|---|---|---|---|")
    median: dict[str, dict[str, float]] = {}
    for side in SIDES:
        median[side] = {
            key: statistics.median(r[key] for r in results[side])
            for key in ("total", "fairness", "p99", "slowest")
        }
        m = median[side]
        print(
            f"| {side} | {m['total']:,.0f} | {m['fairness']:.2f} | {m['p99']:.1f} |"
            f" {m['slowest']:.1f} |"
        )
    ratio = median["library"]["total"] / median["minimal"]["total"]
    print(f"\nlibrary / minimal total rate: {ratio:.2f}x (medians of {rounds} rounds;", end="")
    print(f" load average at end {load_average()})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        side, path, start, seconds = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
        print(json.dumps(asyncio.run(writer(side, path, float(start), float(seconds)))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.processes, args.seconds, args.rounds))
