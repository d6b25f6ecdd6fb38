"""`NATSEventStore` runs the event store contract unchanged, each test on a stream of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventsource import EventRegistry, EventStore
from eventsource.testing import EventStoreContract
from tests._nats import delete_streams, unique_name

pytestmark = pytest.mark.nats


class TestNATSEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    async def _stream(self, nats_url: str) -> AsyncIterator[None]:
        self.url, self.names = nats_url, []
        yield
        await delete_streams(nats_url, *self.names)

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import NATSEventStore

        name = unique_name("st")
        self.names.append(name)
        return NATSEventStore(self.url, stream=name, registry=registry)
