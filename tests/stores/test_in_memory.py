from eventsource import EventRegistry, EventStore, InMemoryEventStore
from eventsource.testing import EventStoreContract, StreamListingContract


class TestInMemoryEventStore(EventStoreContract):
    async def create_store(self, registry: EventRegistry) -> EventStore:
        return InMemoryEventStore(registry=registry)


class TestInMemoryStreamListing(StreamListingContract):
    async def create_store(self, registry: EventRegistry) -> EventStore:
        return InMemoryEventStore(registry=registry)
