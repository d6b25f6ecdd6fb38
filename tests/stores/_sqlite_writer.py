"""A writer process of the multi-process SQLite tests and of `benchmarks/sqlite.py`'s
two-process fairness figure.

    python -m tests.stores._sqlite_writer PATH TAG APPENDS

Appends APPENDS times to the SQLite file at PATH, cycling through three kinds of append: two
events to a stream of its own, one event to the shared stream "any" with
`ExpectedVersion.ANY`, and one event to the shared stream "exact" at the version it read
(read again and retried after an `OptimisticLockError`, as a command would). Prints one JSON
line: the ids of the events it stored, its conflicts, the slowest append and its elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from uuid import UUID, uuid5

from eventsource import DomainEvent, EventRegistry, ExpectedVersion, OptimisticLockError
from eventsource.stores.sqlite import SQLiteEventStore

registry = EventRegistry()

SHARED_ANY = UUID("00000000-0000-7000-8000-00000000000a")
SHARED_EXACT = UUID("00000000-0000-7000-8000-00000000000e")


class Written(DomainEvent, registry=registry):
    writer: str
    n: int


async def write(path: str, tag: str, appends: int) -> dict[str, object]:
    store = SQLiteEventStore(path, registry=registry)
    own = uuid5(SHARED_ANY, tag)
    stored: list[str] = []
    conflicts = 0
    slowest = 0.0
    own_version = 0
    started = time.perf_counter()
    try:
        await store.connect()
        for n in range(appends):
            begun = time.perf_counter()
            kind = n % 3
            if kind == 0:
                events = [Written(writer=tag, n=n), Written(writer=tag, n=n)]
                result = await store.append_events(own, "Own", events, own_version)
                own_version = result.new_version
            elif kind == 1:
                events = [Written(writer=tag, n=n)]
                result = await store.append_events(
                    SHARED_ANY, "Shared", events, ExpectedVersion.ANY
                )
            else:
                events = [Written(writer=tag, n=n)]
                while True:
                    version = await store.get_stream_version(SHARED_EXACT)
                    try:
                        result = await store.append_events(SHARED_EXACT, "Shared", events, version)
                        break
                    except OptimisticLockError:
                        conflicts += 1
            stored += [str(event.event_id) for event in result.events]
            slowest = max(slowest, time.perf_counter() - begun)
    finally:
        await store.close()
    return {
        "tag": tag,
        "stored": stored,
        "conflicts": conflicts,
        "slowest": slowest,
        "elapsed": time.perf_counter() - started,
    }


if __name__ == "__main__":
    path, tag, appends = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(write(path, tag, appends))))
