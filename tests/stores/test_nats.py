"""`NATSEventStore` runs the event store contract unchanged, each test on a stream of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from uuid import uuid4

import pytest

from eventsource import (
    AppendTooLargeError,
    ConfigurationError,
    EventRegistry,
    EventStore,
    EventStoreError,
    InvalidEventError,
    Position,
    ReadOptions,
    StoreConnectionError,
)
from eventsource.testing import EventStoreContract
from eventsource.testing.events import CartCheckedOut, ItemAdded, ItemRemoved, contract_registry
from tests._nats import delete_streams, unique_name

if TYPE_CHECKING:
    from eventsource import NATSEventStore

pytestmark = pytest.mark.nats


class TestNATSEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    async def _stream(self, nats_url: str) -> AsyncIterator[None]:
        self.url = nats_url
        self.names: list[str] = []
        yield
        await delete_streams(nats_url, *self.names)

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import NATSEventStore

        name = unique_name("st")
        self.names.append(name)
        return NATSEventStore(self.url, stream=name, registry=registry)


# -- what only the NATS store promises (its design: one message per append) ------------------


@pytest.fixture
async def streams(nats_url: str) -> AsyncIterator[list[str]]:
    """Names of the streams a test creates; deleted afterwards."""
    names: list[str] = []
    yield names
    await delete_streams(nats_url, *names)


def _store(url: str, streams: list[str], **options: object) -> NATSEventStore:
    from eventsource import NATSEventStore

    name = unique_name("st")
    streams.append(name)
    return NATSEventStore(url, stream=name, registry=contract_registry, **options)  # type: ignore[arg-type]


async def test_an_append_too_large_for_one_message_is_refused_before_publishing(
    nats_url: str, streams: list[str]
) -> None:
    async with _store(nats_url, streams) as store:
        cart = uuid4()
        await store.connect()
        huge = [ItemAdded(name="x" * 100_000) for _ in range(12)]  # > 1 MB max_payload
        with pytest.raises(AppendTooLargeError, match="max_payload"):
            await store.append_events(cart, "Cart", huge, 0)
        assert await store.get_stream_version(cart) == 0
        assert await store.current_position() == Position.START
        result = await store.append_events(cart, "Cart", huge[:5], 0)  # fits: stored whole
        assert result.new_version == 5


async def test_a_retry_after_the_dedupe_window_returns_the_original_result(
    nats_url: str, streams: list[str]
) -> None:
    async with _store(nats_url, streams, duplicate_window=0.2) as store:
        cart = uuid4()
        batch = [ItemAdded(name="a"), ItemAdded(name="b")]
        first = await store.append_events(cart, "Cart", batch, 0)
        await asyncio.sleep(0.5)  # past the window: JetStream no longer knows the msg id
        again = await store.append_events(cart, "Cart", batch, 0)  # last message holds it
        assert again.already_stored
        assert again.positions == first.positions
        later = await store.append_events(cart, "Cart", [ItemRemoved(name="a")], 2)
        await asyncio.sleep(0.5)
        # Not in the last message any more: the version conflict leads to a scan.
        retried = await store.append_events(cart, "Cart", batch, 0)
        assert retried.already_stored
        assert retried.positions == first.positions
        assert await store.get_stream_version(cart) == later.new_version == 3
        assert len([s async for s in store.read_all()]) == 3


async def test_an_aggregate_id_keeps_its_aggregate_type(nats_url: str, streams: list[str]) -> None:
    async with _store(nats_url, streams) as store:
        cart = uuid4()
        await store.append_events(cart, "Cart", [ItemAdded(name="a")], 0)
        with pytest.raises(InvalidEventError, match="aggregate type"):
            await store.append_events(cart, "Order", [CartCheckedOut()], 1)
        assert await store.get_stream_version(cart) == 1


async def test_any_aggregate_type_maps_to_a_subject_token_and_back(
    nats_url: str, streams: list[str]
) -> None:
    async with _store(nats_url, streams) as store:
        odd = "billing.Invoice v2 > *~é"
        invoice, cart = uuid4(), uuid4()
        await store.append_events(invoice, odd, [ItemAdded(name="a")], 0)
        await store.append_events(cart, "Cart", [ItemAdded(name="b")], 0)
        read = [s async for s in store.read_all(ReadOptions(aggregate_type=odd))]
        assert [(s.aggregate_id, s.aggregate_type) for s in read] == [(invoice, odd)]
        assert (await store.get_events(invoice, odd)).version == 1


async def test_appends_of_another_store_object_wake_a_listener(
    nats_url: str, streams: list[str]
) -> None:
    """Another process's appends reach `listen()` through the ordered consumer."""
    from eventsource import NATSEventStore

    async with _store(nats_url, streams) as listening:
        await listening.connect()
        other = NATSEventStore(nats_url, stream=streams[0], registry=contract_registry)
        async with other, listening.listen() as signal:
            await other.append_events(uuid4(), "Cart", [ItemAdded(name="a")], 0)
            async with asyncio.timeout(5):
                await signal.wait()
            assert signal.received >= 1


async def test_an_unreachable_server_is_a_connection_error() -> None:
    from eventsource import NATSEventStore

    store = NATSEventStore("nats://127.0.0.1:1", connect_timeout=0.5)
    with pytest.raises(StoreConnectionError, match="cannot connect"):
        await store.append_events(uuid4(), "Cart", [ItemAdded(name="a")], 0)


async def test_a_foreign_message_on_the_subjects_is_a_clear_error(
    nats_url: str, streams: list[str]
) -> None:
    import nats

    async with _store(nats_url, streams) as store:
        cart = uuid4()
        await store.append_events(cart, "Cart", [ItemAdded(name="a")], 0)
        client = await nats.connect(nats_url)
        try:
            await client.jetstream().publish(f"{streams[0]}.Cart.{uuid4()}", b"not ours")
        finally:
            await client.close()
        with pytest.raises(EventStoreError, match="not an eventsource append"):
            [s async for s in store.read_all()]


@pytest.mark.parametrize("name", ["has.dot", "white space", "star*", ""])
def test_names_that_nats_refuses_are_configuration_errors(name: str) -> None:
    from eventsource import NATSEventStore

    with pytest.raises(ConfigurationError):
        NATSEventStore(stream=name)


async def test_store_objects_on_separate_connections_exactly_one_wins(
    nats_url: str, streams: list[str]
) -> None:
    """Several store objects (as several processes would) contend through JetStream's
    expected-last-subject-sequence check: one winner per version, ANY appends all land."""
    from eventsource import NATSEventStore, OptimisticLockError

    first = _store(nats_url, streams)
    stores = [first] + [
        NATSEventStore(nats_url, stream=streams[0], registry=contract_registry) for _ in range(5)
    ]
    cart = uuid4()
    try:
        for version in range(4):

            async def attempt(store: NATSEventStore, expected: int = version) -> bool:
                try:
                    await store.append_events(cart, "Cart", [ItemAdded(name="x")], expected)
                except OptimisticLockError:
                    return False
                return True

            outcomes = await asyncio.gather(*(attempt(s) for s in stores))
            assert sum(outcomes) == 1
        await asyncio.gather(
            *(s.append_events(cart, "Cart", [ItemAdded(name="any")], -1) for s in stores)
        )
        versions = [e.aggregate_version for e in (await first.get_events(cart)).events]
        assert versions == list(range(1, 4 + len(stores) + 1))
    finally:
        for store in stores:
            await store.close()
