"""`TenancyContract` on `NATSEventStore`, each test on a stream of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventsource import EventRegistry, EventStore
from eventsource.testing import TenancyContract
from tests._nats import delete_streams, unique_name


@pytest.mark.nats
class TestNATSTenancy(TenancyContract):
    @pytest.fixture(autouse=True)
    async def _streams(self, nats_url: str) -> AsyncIterator[None]:
        self.url = nats_url
        self.names: list[str] = []
        yield
        await delete_streams(nats_url, *self.names)

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import NATSEventStore

        name = unique_name("ten")
        self.names.append(name)
        return NATSEventStore(self.url, stream=name, registry=registry)
