"""The SQLite store's lean stored form, and files an older release created."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import EventCodec, SQLiteEventStore
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.sqlite

_OLD_TABLE = (
    "CREATE TABLE events ("
    " position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,"
    " event_type TEXT NOT NULL, event_version INTEGER NOT NULL, aggregate_id TEXT NOT NULL,"
    " aggregate_type TEXT NOT NULL, aggregate_version INTEGER NOT NULL, tenant_id TEXT,"
    " occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, payload TEXT NOT NULL,"
    " UNIQUE (aggregate_id, aggregate_version))"
)
"""The events table as releases before the lean form created it."""


async def test_rows_hold_the_event_fields_and_the_envelope_in_columns(tmp_path: Path) -> None:
    path = tmp_path / "lean.db"
    cart = uuid4()
    cause = ItemAdded(name="cause")
    event = ItemAdded(name="lean").with_causation(cause).with_metadata(source="test")
    async with SQLiteEventStore(path, registry=contract_registry) as store:
        await store.append_events(cart, "Cart", [event], 0)
        (stored,) = [s async for s in store.read_stream(cart)]
        assert stored.event == event.attached(cart, "Cart", 1)
        assert json.loads(stored.payload) == json.loads(EventCodec.encode(stored.event))
    with sqlite3.connect(path) as conn:
        payload, correlation, causation, metadata = conn.execute(
            "SELECT payload, correlation_id, causation_id, metadata FROM events"
        ).fetchone()
    assert json.loads(payload) == {"name": "lean", "quantity": 1}
    assert (correlation, causation) == (str(cause.correlation_id), str(cause.event_id))
    assert json.loads(metadata) == {"source": "test"}


async def test_a_file_of_an_older_release_reads_as_before_and_takes_lean_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    cart = uuid4()
    old = ItemAdded(name="old", metadata={"k": 1}).attached(cart, "Cart", 1)
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_TABLE)
        conn.execute(
            "INSERT INTO events (event_id, event_type, event_version, aggregate_id,"
            " aggregate_type, aggregate_version, tenant_id, occurred_at, recorded_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)",
            (
                str(old.event_id),
                old.event_type,
                old.event_version,
                str(cart),
                "Cart",
                1,
                old.occurred_at.isoformat(timespec="microseconds"),
                old.occurred_at.isoformat(timespec="microseconds"),
                EventCodec.encode(old),
            ),
        )
    # Two stores opening the old file at once: one adds the columns, neither fails.
    first = SQLiteEventStore(path, registry=contract_registry)
    second = SQLiteEventStore(path, registry=contract_registry)
    try:
        await asyncio.gather(first.connect(), second.connect())
        new = ItemAdded(name="new")
        await first.append_events(cart, "Cart", [new], 1)
        read = [s async for s in second.read_stream(cart)]
        assert [s.event for s in read] == [old, new.attached(cart, "Cart", 2)]
        assert read[0].payload == EventCodec.encode(old)
        assert (await second.get_event(old.event_id)).event == old
    finally:
        await first.close()
        await second.close()
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        rows = conn.execute("SELECT correlation_id IS NULL FROM events ORDER BY position")
        assert [lean for (lean,) in rows] == [1, 0]
    assert columns[-3:] == ["correlation_id", "causation_id", "metadata"]
