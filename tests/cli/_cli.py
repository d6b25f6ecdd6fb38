"""Helpers of the operations commands' tests: run `main` and read what it wrote."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource.cli import main
from eventsource.config import create_event_store
from eventsource.testing.events import CartCheckedOut, ItemAdded, contract_registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`eventsource ARGV...` in this process: (exit status, stdout, stderr)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """The JSON document a successful `--json` run wrote."""
    status, out, err = run(capsys, *argv, "--json")
    assert (status, err) == (0, ""), err
    return json.loads(out)


def one_line(err: str) -> str:
    """The single line a failing command wrote on stderr."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def fill(url: str, streams: dict[str, list[int]]) -> dict[UUID, str]:
    """Streams of each aggregate type with the given numbers of events (ItemAdded, then a
    CartCheckedOut last): id -> type. The tables are created first."""

    async def go() -> dict[UUID, str]:
        store = create_event_store(url, registry=contract_registry)
        try:
            # PostgreSQL: the tables; SQLite: the file and its table
            create = getattr(store, "create_schema", None) or getattr(store, "connect", None)
            assert create is not None
            await create()
            made: dict[UUID, str] = {}
            for aggregate_type, counts in streams.items():
                for count in counts:
                    stream = uuid4()
                    events = [ItemAdded(name=f"{aggregate_type}-{n}") for n in range(count - 1)]
                    await store.append_events(
                        stream, aggregate_type, [*events, CartCheckedOut()], 0
                    )
                    made[stream] = aggregate_type
            return made
        finally:
            await store.close()

    return asyncio.run(go())
