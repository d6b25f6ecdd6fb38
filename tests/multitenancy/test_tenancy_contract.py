"""`TenancyContract` on every event store backend: tenants racing through the cache,
snapshots, single-flight loads and plain replays never see each other's events."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsource import EventRegistry, EventStore, InMemoryEventStore
from eventsource.testing import TenancyContract


class TestInMemoryTenancy(TenancyContract):
    async def create_store(self, registry: EventRegistry) -> EventStore:
        return InMemoryEventStore(registry=registry)


@pytest.mark.sqlite
class TestSQLiteTenancy(TenancyContract):
    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import SQLiteEventStore

        return SQLiteEventStore(self.path, registry=registry)


@pytest.mark.postgresql
class TestPostgreSQLTenancy(TenancyContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import PostgreSQLEventStore

        store = PostgreSQLEventStore.from_url(self.url, schema=self.schema, registry=registry)
        await store.create_schema()
        return store
