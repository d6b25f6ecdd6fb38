"""The lean stored form on PostgreSQL (migration 0008): payload = the event's own fields, the
envelope in typed columns; rows written before it read as before; loads in one round trip.

Every test works in its own schema, dropped afterwards.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from eventsource import EventCodec, EventRegistry, ReadOptions
from eventsource.exceptions import EventTypeNotFoundError
from eventsource.stores._postgresql_columns import append_arrays
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded, ItemRemoved, UnregisteredEvent, contract_registry

pytestmark = pytest.mark.postgresql


async def _rows(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def test_a_row_keeps_the_envelope_in_columns_not_in_its_payload(
    store: PostgreSQLEventStore, postgres_url: str
) -> None:
    cause = ItemAdded(name="cause")
    tenant = uuid4()
    rich = ItemAdded(name="a", quantity=2, tenant_id=tenant).with_causation(cause)
    rich = rich.with_metadata(user="ann", trace={"depth": 1.5})
    plain = ItemAdded(name="b")
    cart = uuid4()
    await store.append_events(cart, "Cart", [rich, plain], 0)
    rows = await _rows(
        postgres_url,
        f"SELECT payload::text, correlation_id, causation_id, metadata::text, tenant_id,"
        f" occurred_at FROM {store.table} ORDER BY aggregate_version",
    )
    assert [json.loads(r[0]) for r in rows] == [
        {"name": "a", "quantity": 2},
        {"name": "b", "quantity": 1},
    ]
    assert (rows[0][1], rows[0][2], rows[0][4]) == (cause.correlation_id, cause.event_id, tenant)
    assert json.loads(rows[0][3]) == {"user": "ann", "trace": {"depth": 1.5}}
    assert (rows[1][1], rows[1][2], rows[1][3]) == (plain.event_id, None, None)
    assert [r[5] for r in rows] == [rich.occurred_at, plain.occurred_at]
    # ... and every reader gets the events back whole.
    stream = await store.get_events(cart)
    assert [e.model_dump() for e in stream.events] == [
        e.attached(cart, "Cart", n).model_dump() for n, e in enumerate([rich, plain], start=1)
    ]
    feed = [s.event async for s in store.read_all()]
    assert feed == stream.events
    assert (await store.get_event(rich.event_id)).event == stream.events[0]


async def test_rows_written_before_the_lean_form_read_as_before(
    store: PostgreSQLEventStore, postgres_url: str
) -> None:
    """A database migrated from an older release keeps its rows: the complete event in the
    payload, no correlation_id. They read back as before, beside lean rows of the stream."""
    cart = uuid4()
    old = ItemAdded(name="old", tenant_id=uuid4()).with_metadata(user="bob")
    old = old.attached(cart, "Cart", 1)
    await _rows(
        postgres_url,
        f"INSERT INTO {store.table} (event_id, event_type, event_version, aggregate_id,"
        " aggregate_type, aggregate_version, tenant_id, occurred_at, payload)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        old.event_id,
        old.event_type,
        old.event_version,
        cart,
        "Cart",
        1,
        old.tenant_id,
        old.occurred_at,
        EventCodec.encode(old),
    )
    new = ItemAdded(name="new")
    await store.append_events(cart, "Cart", [new], 1)
    stream = await store.get_events(cart)
    assert stream.events == [old, new.attached(cart, "Cart", 2)]
    read = [s async for s in store.read_stream(cart)]
    assert [s.lean for s in read] == [False, True]
    assert json.loads(read[0].payload) == json.loads(EventCodec.encode(old))
    assert json.loads(read[1].payload) == json.loads(EventCodec.encode(stream.events[1]))
    assert [s.event async for s in store.read_all()] == stream.events
    assert (await store.get_event(old.event_id)).event == old
    # an idempotent retry of the old append is recognised from the complete payload
    again = await store.append_events(cart, "Cart", [old], 0)
    assert again.already_stored


async def test_an_undecodable_lean_row_keeps_what_rebuilds_it(
    store: PostgreSQLEventStore,
) -> None:
    """A row of a type this process does not register: its `payload` (what a dead letter
    keeps) is the complete event, so a process that knows the type rebuilds it from the text
    alone."""
    cart = uuid4()
    unknown = UnregisteredEvent(note="from a newer service").with_metadata(user="ann")
    await store.append_events(cart, "Cart", [ItemAdded(name="a"), unknown], 0)
    stored = [s async for s in store.read_stream(cart)][1]
    assert stored.lean
    assert isinstance(stored.decode_error(), EventTypeNotFoundError)
    assert stored.envelope_complete
    newer = EventRegistry()
    newer.register(UnregisteredEvent)
    rebuilt = EventCodec(newer).decode(stored.event_type, stored.event_version, stored.payload)
    assert rebuilt == unknown.attached(cart, "Cart", 2)


def _count_fetches(store: PostgreSQLEventStore) -> list[str]:
    """Record the statements the store runs (each one round trip)."""
    statements: list[str] = []
    fetch: Callable[..., Awaitable[Any]] = store._fetch

    async def counting(what: str, sql: str, *args: Any) -> Any:
        statements.append(sql)
        return await fetch(what, sql, *args)

    store._fetch = counting  # type: ignore[method-assign]
    return statements


async def test_a_stream_that_fits_loads_in_one_round_trip(store: PostgreSQLEventStore) -> None:
    cart = uuid4()
    events = [ItemAdded(name=f"item-{n}", quantity=n) for n in range(1, 1501)]
    await store.append_events(cart, "Cart", events, 0)
    statements = _count_fetches(store)
    stream = await store.get_events(cart, "Cart")
    assert [e.quantity for e in stream.events] == list(range(1, 1501))  # type: ignore[attr-defined]
    assert len(statements) == 1
    # A caller asking for smaller pages gets them: memory stays bounded by its batch size.
    statements.clear()
    read = [s async for s in store.read_stream(cart, ReadOptions(batch_size=100))]
    assert [s.version for s in read] == list(range(1, 1501))
    assert len(statements) == 16  # 15 full pages, and the empty one that says "the end"
    statements.clear()
    limited = [s async for s in store.read_stream(cart, ReadOptions(from_version=3, limit=5))]
    assert [s.version for s in limited] == [3, 4, 5, 6, 7]
    assert len(statements) == 1


async def test_the_outbox_keeps_the_complete_event(postgres_url: str, schema: str) -> None:
    """The outbox row (what the relay publishes) is built in the append statement from the
    lean row: it must be the whole event, envelope included."""
    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, registry=contract_registry, outbox=True
    ) as store:
        await store.create_schema()
        cart = uuid4()
        event = ItemAdded(name="a", tenant_id=uuid4()).with_causation(ItemAdded(name="c"))
        event = event.with_metadata(user="ann")
        plain = ItemAdded(name="b")
        result = await store.append_events(cart, "Cart", [event, plain], 0)
        rows = await _rows(
            postgres_url,
            f'SELECT event_type, event_version, payload FROM "{schema}".outbox ORDER BY id',
        )
        codec = EventCodec(contract_registry)
        assert [codec.decode(r[0], r[1], r[2]) for r in rows] == list(result.events)


async def test_a_writer_of_a_rolling_deploy_writes_complete_rows(
    store: PostgreSQLEventStore, postgres_url: str
) -> None:
    """`lean_payloads=False` writes what releases before 0008 wrote (the complete event, no
    correlation_id), which older readers still understand; lean readers read both."""
    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=store.schema, registry=contract_registry, lean_payloads=False
    ) as old_style:
        cart = uuid4()
        event = ItemAdded(name="a", tenant_id=uuid4()).with_metadata(user="ann")
        result = await old_style.append_events(cart, "Cart", [event], 0)
        await store.append_events(cart, "Cart", [ItemAdded(name="b")], 1)
        rows = await _rows(
            postgres_url,
            f"SELECT payload::text, correlation_id, metadata FROM {store.table}"
            " ORDER BY aggregate_version",
        )
        assert json.loads(rows[0][0]) == json.loads(EventCodec.encode(result.events[0]))
        assert (rows[0][1], rows[0][2]) == (None, None)
        assert rows[1][1] is not None
        for reader in (store, old_style):
            read = [s async for s in reader.read_stream(cart)]
            assert [s.lean for s in read] == [False, True]
            assert read[0].event == result.events[0]


async def test_times_travel_as_epoch_seconds_exact_to_the_microsecond(
    store: PostgreSQLEventStore,
) -> None:
    """occurred_at is sent and recorded_at and occurred_at are read as float8 epoch seconds:
    every microsecond must come back as it was, from 1970 to 2100."""
    rng = random.Random(8)
    start = datetime(1970, 1, 1, tzinfo=UTC)
    span = int((datetime(2100, 1, 1, tzinfo=UTC) - start).total_seconds() * 1_000_000)
    times = [start + timedelta(microseconds=rng.randrange(span)) for _ in range(300)]
    times += [datetime(2026, 12, 7, 14, 1, 18, us, tzinfo=UTC) for us in (0, 1, 499999, 999999)]
    cart = uuid4()
    events = [ItemAdded(name=str(n), occurred_at=t) for n, t in enumerate(times)]
    before = datetime.now(UTC)
    await store.append_events(cart, "Cart", events, 0)
    read = [s async for s in store.read_stream(cart)]
    assert [s.event.occurred_at for s in read] == times
    assert all(s.recorded_at.tzinfo is UTC for s in read)
    assert before - timedelta(seconds=5) <= read[0].recorded_at <= datetime.now(UTC)


@pytest.mark.parametrize("lean", [True, False])
async def test_uniform_and_mixed_batches_write_the_same_rows(
    store: PostgreSQLEventStore, postgres_url: str, lean: bool
) -> None:
    """A batch of one type with nothing but its own ids (the usual command) goes through the
    shorter statement, any other batch through the general one: the rows must not differ."""
    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=store.schema, registry=contract_registry, lean_payloads=lean
    ) as writer:
        uniform, mixed = uuid4(), uuid4()
        plain = [ItemAdded(name="a", quantity=2), ItemAdded(name="b")]
        same = [ItemAdded(name="a", quantity=2), ItemAdded(name="b")]
        sql, _ = writer._appends.call(
            uniform, "Cart", 0, append_arrays(plain, lean=lean), "c", (1, 2)
        )
        assert sql is writer._appends.uniform
        batch = [*same, ItemRemoved(name="a")]
        sql, _ = writer._appends.call(
            mixed, "Cart", 0, append_arrays(batch, lean=lean), "c", (1, 2)
        )
        assert sql is writer._appends.general
        first = await writer.append_events(uniform, "Cart", plain, 0)
        second = await writer.append_events(mixed, "Cart", batch, 0)
        assert [p.sequence for p in first.positions] == sorted(p.sequence for p in first.positions)
        columns = (
            "event_type, event_version, aggregate_type, aggregate_version, tenant_id,"
            " occurred_at, payload::text, correlation_id, causation_id, metadata,"
            " correlation_id = event_id AS own_correlation"
        )
        rows = {
            stream: [
                dict(r)
                for r in await _rows(
                    postgres_url,
                    f"SELECT {columns} FROM {store.table} WHERE aggregate_id = $1"
                    " ORDER BY aggregate_version",
                    stream,
                )
            ]
            for stream in (uniform, mixed)
        }
        for row in [*rows[uniform], *rows[mixed]]:
            row.pop("occurred_at")
            if lean:
                assert row.pop("own_correlation") is True
                row.pop("correlation_id")
            else:  # correlation_id NULL, the complete event (its ids too) in the payload
                assert row.pop("own_correlation") is None
                row.pop("payload")
        assert rows[uniform] == rows[mixed][:2]
        assert rows[uniform][0]["event_type"] == "ItemAdded"
        assert rows[mixed][2]["event_type"] == "ItemRemoved"
        assert [s.event async for s in store.read_stream(uniform)] == list(first.events)
        assert [s.event async for s in store.read_stream(mixed)] == list(second.events)
