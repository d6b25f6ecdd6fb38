"""Large SQLite appends: a batch is inserted in chunks of `ROWS_PER_INSERT` rows (so that no
statement passes SQLite's limit on bound variables), inside one transaction. These tests put
batches on both sides of the chunk boundaries and past the variable limit, and check that a
batch still reads back whole and in order, that its retry is recognised, and that a failure
in a later chunk leaves nothing of the earlier ones."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from eventsource import (
    DomainEvent,
    EventIdConflictError,
    ExpectedVersion,
    Position,
    ReadOptions,
    SQLiteEventStore,
)
from eventsource.stores._sqlite_append import ROWS_PER_INSERT
from eventsource.stores._sqlite_rows import INSERT_COLUMNS
from eventsource.testing.events import CartCheckedOut, ItemAdded, ItemRemoved, contract_registry

pytestmark = pytest.mark.sqlite

_VARIABLE_LIMIT = 32_766
"""SQLite's default maximum number of bound variables in one statement (since 3.32)."""
_ROWS_PAST_LIMIT = _VARIABLE_LIMIT // len(INSERT_COLUMNS.split(",")) + 1
"""The smallest batch whose rows would not fit in one INSERT."""


def _mixed(count: int, tag: str = "") -> list[DomainEvent]:
    """`count` events of three types in turn (one batch, several event classes)."""
    kinds = (
        lambda n: ItemAdded(name=f"{tag}{n}", quantity=n),
        lambda n: ItemRemoved(name=f"{tag}{n}"),
        lambda n: CartCheckedOut(),
    )
    return [kinds[n % 3](n) for n in range(count)]


@pytest.mark.parametrize(
    "size",
    [
        ROWS_PER_INSERT - 1,
        ROWS_PER_INSERT,
        ROWS_PER_INSERT + 1,
        2 * ROWS_PER_INSERT + 1,
        _ROWS_PAST_LIMIT,
    ],
)
async def test_a_batch_around_the_chunk_boundaries_reads_back_whole(
    tmp_path: Path, size: int
) -> None:
    cart = uuid4()
    async with SQLiteEventStore(tmp_path / "events.db", registry=contract_registry) as store:
        await store.append_events(cart, "Cart", [ItemAdded(name="first")], 0)
        batch = _mixed(size)
        result = await store.append_events(cart, "Cart", batch, 1)

        assert result.new_version == size + 1
        assert [e.event_id for e in result.events] == [e.event_id for e in batch]
        assert [e.aggregate_version for e in result.events] == list(range(2, size + 2))
        first = result.positions[0].sequence
        assert result.positions == tuple(Position(0, first + n) for n in range(size))

        stored = [s async for s in store.read_stream(cart, ReadOptions(from_version=2))]
        assert [s.event for s in stored] == list(result.events)
        assert [s.position for s in stored] == list(result.positions)
        assert [type(s.event) for s in stored[:3]] == [ItemAdded, ItemRemoved, CartCheckedOut]
        assert await store.count_events() == size + 1


async def test_a_large_batch_retried_is_recognised_as_stored(tmp_path: Path) -> None:
    """The retry's lookup of stored ids is chunked as well (one `IN (...)` per chunk)."""
    cart = uuid4()
    size = 2 * ROWS_PER_INSERT + 7
    async with SQLiteEventStore(tmp_path / "events.db", registry=contract_registry) as store:
        batch = _mixed(size)
        first = await store.append_events(cart, "Cart", batch, 0)
        again = await store.append_events(cart, "Cart", batch, 0)
        stamped = await store.append_events(cart, "Cart", first.events, ExpectedVersion.ANY)

        for retry in (again, stamped):
            assert retry.already_stored
            assert retry.new_version == size
            assert retry.positions == first.positions
            assert list(retry.events) == list(first.events)
        assert await store.count_events() == size


async def test_a_failure_in_a_later_chunk_stores_nothing_of_the_batch(tmp_path: Path) -> None:
    """An event id of the last chunk is stored already (in another stream): the rows the
    earlier chunks inserted are rolled back with it, and the error names the event."""
    cart, other = uuid4(), uuid4()
    async with SQLiteEventStore(tmp_path / "events.db", registry=contract_registry) as store:
        batch = _mixed(ROWS_PER_INSERT + 3)
        taken = batch[-2]
        await store.append_events(other, "Cart", [taken], 0)

        with pytest.raises(EventIdConflictError) as raised:
            await store.append_events(cart, "Cart", batch, 0)

        assert raised.value.event_id == taken.event_id
        assert await store.get_stream_version(cart) == 0
        assert not await store.event_exists(batch[0].event_id)
        assert await store.count_events() == 1
