"""Several processes appending to one SQLite file (the writer is `_sqlite_writer`): no event
lost or stored twice, a gap-free feed, and every stream's versions 1, 2, 3, ... in feed order.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import cast
from uuid import UUID

import pytest

from eventsource import ReadOptions
from eventsource.stores.sqlite import SQLiteEventStore
from tests.stores._sqlite_writer import registry

pytestmark = pytest.mark.sqlite

PROCESSES = 4
APPENDS = 60


async def run_writers(path: Path, processes: int, appends: int) -> list[dict[str, object]]:
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.stores._sqlite_writer",
            str(path),
            f"p{n}",
            str(appends),
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parents[2],
        )
        for n in range(processes)
    ]
    outputs = await asyncio.gather(*(worker.communicate() for worker in workers))
    assert [worker.returncode for worker in workers] == [0] * processes
    return [json.loads(out) for out, _ in outputs]


async def test_processes_appending_to_one_file_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    # The file exists before the writers start, as an application's usually does.
    await SQLiteEventStore(path, registry=registry).close()
    reports = await run_writers(path, PROCESSES, APPENDS)

    written = [event_id for report in reports for event_id in cast(list[str], report["stored"])]
    assert len(written) == len(set(written)) == PROCESSES * APPENDS * 4 // 3

    store = SQLiteEventStore(path, registry=registry)
    try:
        feed = [stored async for stored in store.read_all(ReadOptions(batch_size=97))]
        assert sorted(str(stored.event_id) for stored in feed) == sorted(written)
        positions = [stored.position.sequence for stored in feed]
        assert positions == list(range(1, len(feed) + 1))  # gap-free, in order
        versions: dict[UUID, list[int]] = defaultdict(list)
        for stored in feed:
            versions[stored.aggregate_id].append(stored.version)
            assert stored.event.aggregate_version == stored.version
        for stream, seen in versions.items():
            assert seen == list(range(1, len(seen) + 1)), stream
            assert await store.get_stream_version(stream) == len(seen)
    finally:
        await store.close()
