"""The SQLite store's lean stored form, and files an older release created."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import DomainEvent, EventCodec, SQLiteEventStore
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


def _envelope_variants() -> dict[str, DomainEvent]:
    """Events whose envelope leaves its defaults in each way: reads take the four optional
    envelope columns as one (NULL for the common row), and split them otherwise."""
    cause = ItemAdded(name="cause")
    return {
        "defaults": ItemAdded(name="plain"),
        "tenant": ItemAdded(name="tenant", tenant_id=uuid4()),
        "correlation": ItemAdded(name="correlated", correlation_id=uuid4()),
        "causation": ItemAdded(name="caused").with_causation(cause),
        "metadata": ItemAdded(name="meta").with_metadata(source="a|b||c", n=1),
        "everything": ItemAdded(name="all", tenant_id=uuid4())
        .with_causation(cause)
        .with_metadata(path="x|y"),
    }


@pytest.mark.parametrize("variant", list(_envelope_variants()))
async def test_every_envelope_reads_back_on_every_read_path(tmp_path: Path, variant: str) -> None:
    event = _envelope_variants()[variant]
    cart = uuid4()
    async with SQLiteEventStore(tmp_path / "lean.db", registry=contract_registry) as store:
        first = await store.append_events(cart, "Cart", [ItemAdded(name="before"), event], 0)
        stamped = first.events[1]
        assert stamped.event_id == event.event_id

        (from_feed,) = [s async for s in store.read_all() if s.event_id == event.event_id]
        from_stream = [s async for s in store.read_stream(cart)][1]
        loaded = [e for page in [p async for p in store.read_stream_events(cart)] for e in page]
        fetched = await store.get_event(event.event_id)
        for stored in (from_feed, from_stream, fetched):
            assert stored.event == stamped
            assert stored.aggregate_id == cart
            assert json.loads(stored.payload) == json.loads(EventCodec.encode(stamped))
        assert loaded[1] == stamped

        # A retry compares the stored rows (their tenant included) with the batch.
        again = await store.append_events(cart, "Cart", [first.events[0], event], 0)
        assert again.already_stored
        assert again.positions == first.positions


async def test_an_old_row_with_a_tenant_reads_and_retries_as_before(tmp_path: Path) -> None:
    """A row of an older release has no correlation id (its payload is complete) but may
    have a tenant: it reads through its payload, and a retry of it is recognised."""
    path = tmp_path / "old.db"
    cart = uuid4()
    old = ItemAdded(name="old", tenant_id=uuid4()).attached(cart, "Cart", 1)
    with sqlite3.connect(path) as conn:
        conn.execute(_OLD_TABLE)
        conn.execute(
            "INSERT INTO events (event_id, event_type, event_version, aggregate_id,"
            " aggregate_type, aggregate_version, tenant_id, occurred_at, recorded_at, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(old.event_id),
                old.event_type,
                old.event_version,
                str(cart),
                "Cart",
                1,
                str(old.tenant_id),
                old.occurred_at.isoformat(timespec="microseconds"),
                old.occurred_at.isoformat(timespec="microseconds"),
                EventCodec.encode(old),
            ),
        )
    async with SQLiteEventStore(path, registry=contract_registry) as store:
        (stored,) = [s async for s in store.read_all()]
        assert not stored.lean
        assert stored.event == old
        assert stored.payload == EventCodec.encode(old)
        loaded = [e for page in [p async for p in store.read_stream_events(cart)] for e in page]
        assert loaded == [old]
        again = await store.append_events(cart, "Cart", [old], 0)
        assert again.already_stored
        assert again.positions == (stored.position,)
