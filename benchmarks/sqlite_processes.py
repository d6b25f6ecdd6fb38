"""Fairness of writers in several processes sharing one SQLite file.

    uv run python benchmarks/sqlite_processes.py [--processes 2] [--seconds 3]

Each process opens a `SQLiteEventStore` on the same file and, from a common start time,
appends one event at a time to a stream of its own for the given seconds. Reported per
process: appends/s and the slowest append; overall: the slowest process's rate over the
fastest's (1.00 = a fair share each). SQLite lets one writer in at a time, so what decides the
shares is how a waiting writer comes back for the lock (`begin_immediate`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from uuid import uuid4

from _common import Incremented, load_average, registry

from eventsource.stores.sqlite import SQLiteEventStore


async def writer(path: str, start: float, seconds: float) -> dict[str, float]:
    store = SQLiteEventStore(path, registry=registry)
    await store.connect()
    stream, version, slowest = uuid4(), 0, 0.0
    try:
        await asyncio.sleep(max(0.0, start - time.time()))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            begun = time.perf_counter()
            result = await store.append_events(stream, "Counter", [Incremented(amount=1)], version)
            version = result.new_version
            slowest = max(slowest, time.perf_counter() - begun)
    finally:
        await store.close()
    return {"rate": version / seconds, "slowest_ms": slowest * 1000}


async def main(processes: int, seconds: float) -> None:
    started = load_average()
    directory = tempfile.mkdtemp(
        prefix="eventsource-bench-", dir=os.environ.get("EVENTSOURCE_BENCH_SQLITE_DIR")
    )
    path = os.path.join(directory, "shared.db")
    try:
        await SQLiteEventStore(path, registry=registry).close()
        start = time.time() + 1.0
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--child",
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
    rates = [r["rate"] for r in reports]
    print(f"{processes} processes appending to one file for {seconds:g} s", end="")
    print(f" (load average at start {started}, at end {load_average()})")
    for n, report in enumerate(reports):
        rate, slowest = report["rate"], report["slowest_ms"]
        print(f"  process {n}: {rate:,.0f} appends/s, slowest {slowest:.1f} ms")
    fair = min(rates) / max(rates)
    print(f"  total {sum(rates):,.0f} appends/s; slowest/fastest process {fair:.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        path, start, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(asyncio.run(writer(path, start, seconds))))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(main(args.processes, args.seconds))
