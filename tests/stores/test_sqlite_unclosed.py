"""SQLite objects nobody closed: the process still ends, with no traceback of ours.

aiosqlite's worker threads used to keep the interpreter alive when an exception escaped
`asyncio.run` (the traceback holds the unclosed store), and to print an "Event loop is
closed" traceback after a normal `asyncio.run`. Each scenario runs in a fresh interpreter;
the timeout only bounds a hang.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sqlite

README = Path(__file__).resolve().parents[2] / "README.md"

HANG_BOUND = 120  # seconds; the scripts take about one


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "default", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_BOUND,
    )


FAILING_SCRIPT = """
import asyncio
from uuid import uuid4

from eventsource import (
    DomainEvent, SQLiteCheckpointRepository, SQLiteEventStore, SQLiteSnapshotStore,
)


class Happened(DomainEvent):
    n: int


async def main():
    store = SQLiteEventStore("app.db")
    await store.append_events(uuid4(), "Thing", [Happened(n=1)], 0)
    checkpoints = SQLiteCheckpointRepository("app.db")
    await checkpoints.list()
    snapshots = SQLiteSnapshotStore("app.db")
    await snapshots.get(uuid4())
    raise RuntimeError("the user's own failure")


asyncio.run(main())
"""


def test_exception_escaping_asyncio_run_exits_with_its_traceback(tmp_path: Path) -> None:
    done = _run(FAILING_SCRIPT, tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: the user's own failure" in done.stderr


def _readme_example_on_sqlite(*, close: bool) -> str:
    """The README's example with `SQLiteEventStore("app.db")` swapped in, as it says."""
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert example is not None
    script = example[1].replace("InMemoryEventStore", "SQLiteEventStore")
    script = script.replace("SQLiteEventStore()", 'SQLiteEventStore("app.db")')
    assert 'SQLiteEventStore("app.db")' in script
    if not close:  # what the README example did before it closed its store
        script = re.sub(
            r"async with (SQLiteEventStore\(\"app.db\"\)) as store:",
            r"if (store := \1):",
            script,
        )
        assert "async with" not in script
    return script


def test_readme_example_on_sqlite_prints_nothing(tmp_path: Path) -> None:
    done = _run(_readme_example_on_sqlite(close=True), tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


def test_unclosed_store_warns_and_exits_cleanly(tmp_path: Path) -> None:
    done = _run(_readme_example_on_sqlite(close=False), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "Event loop is closed" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "Warning" in line]
    assert warnings, done.stderr
    assert all("ResourceWarning" in line for line in warnings), done.stderr
    assert "SQLiteEventStore('app.db') was not closed" in done.stderr
