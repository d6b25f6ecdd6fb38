"""Peak memory of one side's catch-up, in a fresh process (postgresql.py --rss N).

    python benchmarks/_rss.py SIDE SCHEMA EVENTS     # SIDE: library, same-schema, minimal

Reads the first EVENTS events of the feed in pages of 1,000, decoding each (what a
projection's catch-up does), and prints: the resident set before the read, the peak during it
(both in MiB, `resource.getrusage`), and events per second. Constant memory means the peak
stays near the start whatever EVENTS is.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time

import asyncpg
from _common import URL, Lib, keep_session, registry
from _pg_sides import MinimalSide, SameSchemaSide

from eventsource.stores.postgresql import PostgreSQLEventStore


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


async def main(side_name: str, schema: str, events: int) -> None:
    store = PostgreSQLEventStore.from_url(URL, schema=schema, registry=registry)
    pool = await asyncpg.create_pool(URL, min_size=1, max_size=2, reset=keep_session)
    try:
        lib = Lib(store)
        side: Lib | SameSchemaSide | MinimalSide
        if side_name == "library":
            side = lib
        elif side_name == "same-schema":
            side = await SameSchemaSide.build(pool, lib)
        else:
            side = MinimalSide(pool, schema)
        await side.catch_up(10)  # connections and statements ready
        before = peak_mib()
        start = time.perf_counter()
        _, count = await side.catch_up(events)
        rate = count / (time.perf_counter() - start)
        assert count == events, (count, events)
        print(f"{before:.1f} {peak_mib():.1f} {rate:.0f}")
    finally:
        await pool.close()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
