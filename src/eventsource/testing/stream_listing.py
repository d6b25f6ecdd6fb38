"""`StreamListingContract`: what a store that lists its streams (`StreamListing`) must do.

A backend's test module subclasses it and supplies the store::

    class TestMyStoreStreams(StreamListingContract):
        async def create_store(self, registry: EventRegistry) -> EventStore:
            return MyStore(..., registry=registry)

The store must start empty and implement `eventsource.stores.StreamListing`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest

from eventsource.events.registry import EventRegistry
from eventsource.exceptions import InvalidEventError
from eventsource.stores.interface import (
    EventStore,
    ReadDirection,
    ReadOptions,
    StreamInfo,
    StreamListing,
)
from eventsource.testing.events import CartCheckedOut, ItemAdded, contract_registry

__all__ = ["StreamListingContract"]


class StreamListingContract(ABC):
    """Abstract pytest suite; subclasses implement `create_store`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_store(self, registry: EventRegistry) -> EventStore:
        """A new, empty store that lists its streams, decoding through `registry`."""

    @pytest.fixture
    async def store(self) -> AsyncIterator[StreamListing]:
        store = await self.create_store(contract_registry)
        try:
            assert isinstance(store, StreamListing)
            yield store
        finally:
            await store.close()

    @staticmethod
    async def _fill(store: StreamListing, sizes: dict[str, list[int]]) -> dict[UUID, str]:
        """Streams of each aggregate type with the given numbers of events: id -> type."""
        assert isinstance(store, EventStore)
        streams: dict[UUID, str] = {}
        for aggregate_type, counts in sizes.items():
            for count in counts:
                stream = uuid4()
                events = [ItemAdded(name=f"{aggregate_type}-{n}") for n in range(count)]
                await store.append_events(stream, aggregate_type, events, 0)
                streams[stream] = aggregate_type
        return streams

    async def test_an_empty_store_lists_no_stream(self, store: StreamListing) -> None:
        assert await store.list_streams() == []
        assert await store.list_streams(aggregate_type="Cart", after=uuid4(), limit=1) == []

    async def test_every_stream_in_id_order_with_its_version_and_last_write(
        self, store: StreamListing
    ) -> None:
        streams = await self._fill(store, {"Cart": [1, 3, 2], "Order": [4, 1]})
        listed = await store.list_streams()
        assert [s.aggregate_id for s in listed] == sorted(streams)
        assert {s.aggregate_id: s.aggregate_type for s in listed} == streams
        assert isinstance(store, EventStore)
        for info in listed:
            assert isinstance(info, StreamInfo)
            assert info.version == await store.get_stream_version(info.aggregate_id)
            backward = ReadOptions(direction=ReadDirection.BACKWARD, limit=1)
            [last] = [s async for s in store.read_stream(info.aggregate_id, backward)]
            assert info.last_recorded_at == last.recorded_at
        assert sorted(s.version for s in listed) == [1, 1, 2, 3, 4]

    async def test_pages_after_an_id_cover_every_stream_once(self, store: StreamListing) -> None:
        streams = await self._fill(store, {"Cart": [1] * 7})
        seen: list[UUID] = []
        after: UUID | None = None
        while page := await store.list_streams(after=after, limit=3):
            assert len(page) <= 3
            seen.extend(s.aggregate_id for s in page)
            after = page[-1].aggregate_id
        assert seen == sorted(streams)
        middle = sorted(streams)[3]
        assert [s.aggregate_id for s in await store.list_streams(after=middle)] == sorted(streams)[
            4:
        ]

    async def test_filter_by_aggregate_type_with_pages(self, store: StreamListing) -> None:
        streams = await self._fill(store, {"Cart": [1, 2, 1, 1], "Order": [2, 1, 3]})
        orders = sorted(s for s, kind in streams.items() if kind == "Order")
        first = await store.list_streams(aggregate_type="Order", limit=2)
        assert [s.aggregate_id for s in first] == orders[:2]
        rest = await store.list_streams(aggregate_type="Order", after=first[-1].aggregate_id)
        assert [s.aggregate_id for s in rest] == orders[2:]
        assert all(s.aggregate_type == "Order" for s in first + rest)
        assert await store.list_streams(aggregate_type="Nothing") == []

    async def test_a_later_append_moves_the_version_and_last_write_on(
        self, store: StreamListing
    ) -> None:
        assert isinstance(store, EventStore)
        cart = uuid4()
        await store.append_events(cart, "Cart", [ItemAdded(name="a")], 0)
        [before] = await store.list_streams()
        await store.append_events(cart, "Cart", [ItemAdded(name="b"), CartCheckedOut()], 1)
        [after] = await store.list_streams()
        assert (before.version, after.version) == (1, 3)
        assert after.last_recorded_at >= before.last_recorded_at

    async def test_streams_appended_concurrently_are_all_listed(self, store: StreamListing) -> None:
        assert isinstance(store, EventStore)
        carts = [uuid4() for _ in range(20)]
        await asyncio.gather(
            *(store.append_events(c, "Cart", [ItemAdded(name="x")], 0) for c in carts)
        )
        listed = await store.list_streams(limit=100)
        assert [s.aggregate_id for s in listed] == sorted(carts)
        assert all(s.version == 1 for s in listed)

    @pytest.mark.parametrize("limit", [0, -1])
    async def test_a_limit_below_one_is_refused(self, store: StreamListing, limit: int) -> None:
        with pytest.raises(InvalidEventError):
            await store.list_streams(limit=limit)
