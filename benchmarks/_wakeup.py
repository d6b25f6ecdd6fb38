"""A live reader in a process of its own, for the wake-up latency of the PostgreSQL benchmark.

    python benchmarks/_wakeup.py SCHEMA

Follows the library's global feed from its current end: `store.listen()` wakes it (LISTEN/
NOTIFY from the writers' process), and it also polls every 200 ms, as a subscription does. It
prints "ready" once listening, then one line per event read: the event id (hex) and
`time.monotonic()` (one clock for every process of the machine) when the read returned it.
The parent compares that with the moment its append returned. In another process, so the
reader neither shares the writers' event loop nor gets in-process signals that a subscriber
deployed elsewhere would not get.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

from _common import URL, registry

from eventsource import ReadOptions
from eventsource.stores.postgresql import PostgreSQLEventStore


async def follow(schema: str) -> None:
    store = PostgreSQLEventStore.from_url(URL, schema=schema, registry=registry, max_connections=2)
    try:
        async with store.listen() as signal:
            after = await store.current_position()
            print("ready", flush=True)
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await signal.wait()
                lines = []
                async for stored in store.read_all(ReadOptions(after=after)):
                    lines.append(f"{stored.event_id.hex} {time.monotonic():.6f}\n")
                    after = stored.position
                if lines:
                    sys.stdout.write("".join(lines))
                    sys.stdout.flush()
    finally:
        await store.close()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow(sys.argv[1]))
