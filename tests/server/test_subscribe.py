"""The service's feed subscription: catch-up then live, resumable, paced by the client, and
100 client streams held at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import grpc
import pytest

from eventsource import (
    EventRegistry,
    EventStore,
    GrpcEventStore,
    InMemoryEventStore,
    ReadOptions,
    StoredEvent,
)
from eventsource._proto.eventsource.store.v1 import store_pb2, store_pb2_grpc
from eventsource.testing.events import ItemAdded, contract_registry
from tests.server.conftest import served

pytestmark = pytest.mark.grpc


def client(port: int) -> GrpcEventStore:
    return GrpcEventStore(f"127.0.0.1:{port}", registry=contract_registry)


async def _take(events: AsyncIterator[StoredEvent], count: int) -> list[StoredEvent]:
    taken: list[StoredEvent] = []
    async with asyncio.timeout(30):
        async for stored in events:
            taken.append(stored)
            if len(taken) == count:
                break
    return taken


async def test_catch_up_then_live_then_resume() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry()), poll_interval=30) as server:
        assert server.port is not None
        async with client(server.port) as store:
            stored = [ItemAdded(name=f"old-{n}") for n in range(5)]
            await store.append_events(uuid4(), "Cart", stored, 0)
            feed = store.subscribe(batch_size=2)
            old = await _take(feed, 5)
            assert [s.event_id for s in old] == [e.event_id for e in stored]
            # Live: appended after the subscriber caught up, delivered by the append signal
            # (the poll interval is 30 s, longer than the test waits).
            live = [ItemAdded(name=f"new-{n}") for n in range(3)]
            waiting = asyncio.ensure_future(_take(feed, 3))
            await asyncio.sleep(0.2)
            await store.append_events(uuid4(), "Cart", live, 0)
            assert [s.event_id for s in await waiting] == [e.event_id for e in live]
            await feed.aclose()
            # Resumed after a position: exactly what came after it.
            resumed = store.subscribe(ReadOptions(after=old[2].position))
            rest = await _take(resumed, 5)
            assert [s.event.name for s in rest] == ["old-3", "old-4", "new-0", "new-1", "new-2"]  # type: ignore[attr-defined]
            await resumed.aclose()


async def test_the_stream_says_when_it_caught_up() -> None:
    async with served(InMemoryEventStore(registry=EventRegistry())) as server:
        async with client(server.port or 0) as store:
            await store.append_events(
                uuid4(), "Cart", [ItemAdded(name=f"{n}") for n in range(3)], 0
            )
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = store_pb2_grpc.EventStoreStub(channel)
            call = stub.Subscribe(store_pb2.SubscribeRequest(batch_size=2))
            first = await call.read()
            second = await call.read()
            call.cancel()
        assert (len(first.events), first.caught_up) == (2, False)
        assert (len(second.events), second.caught_up) == (1, True)


class CountingStore(InMemoryEventStore):
    """Counts the events the service reads from the feed."""

    read = 0

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        async for stored in super().read_all(options):
            self.read += 1
            yield stored


async def test_a_slow_subscriber_holds_back_the_reading() -> None:
    """Back-pressure: the service reads a page only when the previous one was handed to the
    transport, so a client that stops reading stops the server's reading too."""
    backing = CountingStore(registry=EventRegistry())
    total = 3000
    for n in range(0, total, 100):
        batch = [ItemAdded(name=f"{n + i}" + "z" * 10_000) for i in range(100)]
        await backing.append_events(uuid4(), "Cart", batch, 0)
    async with (
        served(backing, page_size=50) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        stub = store_pb2_grpc.EventStoreStub(channel)
        call = stub.Subscribe(store_pb2.SubscribeRequest(batch_size=50))
        await call.read()  # the subscription runs; then this client stops reading
        await asyncio.sleep(1.0)
        held_back = backing.read
        received = 1
        while True:  # reading on, the client gets everything
            message = await call.read()
            received += 1
            if message.caught_up:
                break
        call.cancel()
    assert held_back < total // 2, f"the server read {held_back} of {total} events ahead"
    assert backing.read >= total
    assert received == total // 50 + 1  # full pages, then the empty "caught up" message


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)])
async def backing(request: pytest.FixtureRequest) -> AsyncIterator[EventStore]:
    """The store behind the service: in memory, or PostgreSQL (whose connection pool of 10
    could not hold one LISTEN per stream: the service listens once for all of them)."""
    if request.param == "memory":
        yield InMemoryEventStore(registry=EventRegistry())
        return
    import asyncpg

    from eventsource.stores.postgresql import PostgreSQLEventStore

    url, schema = request.getfixturevalue("postgres_url"), f"es_test_{uuid4().hex[:12]}"
    try:
        async with PostgreSQLEventStore.from_url(
            url, schema=schema, registry=EventRegistry()
        ) as pg:
            await pg.create_schema()
            yield pg
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def test_the_service_holds_100_client_streams(backing: EventStore) -> None:
    async with served(backing) as server:
        assert server.port is not None
        clients = [client(server.port) for _ in range(100)]
        stream = uuid4()
        await clients[0].append_events(stream, "Cart", [ItemAdded(name="before")], 0)
        feeds = [c.subscribe() for c in clients]
        try:
            firsts = await asyncio.gather(*(_take(feed, 1) for feed in feeds))
            assert all([s.event.name for s in f] == ["before"] for f in firsts)  # type: ignore[attr-defined]
            waiting = [asyncio.ensure_future(_take(feed, 1)) for feed in feeds]
            await asyncio.sleep(0.5)
            live = ItemAdded(name="live")
            await clients[1].append_events(stream, "Cart", [live], 1)
            seconds = await asyncio.gather(*waiting)
            got: list[UUID] = [s.event_id for second in seconds for s in second]
            assert got == [live.event_id] * 100
        finally:
            for feed in feeds:
                await feed.aclose()
            await asyncio.gather(*(c.close() for c in clients))
