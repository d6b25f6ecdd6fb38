"""GrpcEventStore against a real store service on a loopback port, with a PostgreSQL store
behind it: the contract, unchanged (only the factory).

The store behind the server decodes nothing (an empty registry): the service handles events
as JSON, the client decodes them through the contract's registry. Its appends are not traced,
so the contract's telemetry test sees the client's spans only, as it would across processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventsource import EventRegistry, EventStore
from eventsource.server.grpc import GrpcStoreServer
from eventsource.stores.grpc import GrpcEventStore
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing import EventStoreContract

pytestmark = [pytest.mark.grpc, pytest.mark.postgresql]


class TestGrpcEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    async def _service(self, postgres_url: str, schema: str) -> AsyncIterator[None]:
        self.url, self.schema = postgres_url, schema
        self.opened: list[tuple[GrpcStoreServer, PostgreSQLEventStore]] = []
        yield
        for server, backing in self.opened:
            await server.close()
            await backing.close()

    async def create_store(self, registry: EventRegistry) -> EventStore:
        backing = PostgreSQLEventStore.from_url(
            self.url, schema=self.schema, registry=EventRegistry()
        )
        backing.enable_tracing = False
        await backing.create_schema()
        server = GrpcStoreServer(backing)
        port = await server.start("127.0.0.1:0")
        self.opened.append((server, backing))
        return GrpcEventStore(f"127.0.0.1:{port}", registry=registry)
