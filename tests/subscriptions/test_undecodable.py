"""Undecodable stored events (unknown type, corrupt payload, failing upcaster) on every backend:
`UndecodableEventContract` with each backend's store, checkpoints and dead letters."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from uuid import UUID

import pytest

from eventsource import EventRegistry, EventStore, InMemoryEventStore
from eventsource.repositories import (
    CheckpointRepository,
    DLQRepository,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
)
from eventsource.testing import UndecodableEventContract


class TestInMemoryUndecodable(UndecodableEventContract):
    async def create_store(self, registry: EventRegistry) -> EventStore:
        return InMemoryEventStore(registry=registry)

    async def create_checkpoints(self) -> CheckpointRepository:
        return InMemoryCheckpointRepository()

    async def create_dead_letters(self) -> DLQRepository:
        return InMemoryDLQRepository()

    async def corrupt_event(self, store: EventStore, event_id: UUID) -> None:
        assert isinstance(store, InMemoryEventStore)
        record = store._by_id[event_id]
        broken = dataclasses.replace(record, payload='{"name": "corrupt", not json')
        store._by_id[event_id] = broken
        store._records[store._records.index(record)] = broken
        stream = store._streams[record.aggregate_id]
        stream[stream.index(record)] = broken


@pytest.mark.sqlite
class TestSQLiteUndecodable(UndecodableEventContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import SQLiteEventStore

        return SQLiteEventStore(self.path, registry=registry)

    async def create_checkpoints(self) -> CheckpointRepository:
        from eventsource.repositories import SQLiteCheckpointRepository

        return SQLiteCheckpointRepository(self.path)

    async def create_dead_letters(self) -> DLQRepository:
        from eventsource.repositories import SQLiteDLQRepository

        return SQLiteDLQRepository(self.path)

    async def corrupt_event(self, store: EventStore, event_id: UUID) -> None:
        import sqlite3

        with sqlite3.connect(self.path) as conn:
            conn.execute(
                'UPDATE events SET payload = \'{"name": "corrupt", not json\' WHERE event_id = ?',
                (str(event_id),),
            )
        conn.close()


@pytest.mark.postgresql
class TestPostgreSQLUndecodable(UndecodableEventContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self, registry: EventRegistry) -> EventStore:
        from eventsource import PostgreSQLEventStore

        store = PostgreSQLEventStore.from_url(self.url, schema=self.schema, registry=registry)
        await store.create_schema()
        return store

    async def create_checkpoints(self) -> CheckpointRepository:
        from eventsource.repositories import PostgreSQLCheckpointRepository

        return PostgreSQLCheckpointRepository.from_url(self.url, schema=self.schema)

    async def create_dead_letters(self) -> DLQRepository:
        from eventsource.repositories import PostgreSQLDLQRepository

        return PostgreSQLDLQRepository.from_url(self.url, schema=self.schema)

    async def corrupt_event(self, store: EventStore, event_id: UUID) -> None:
        """The payload column is jsonb, so the damage is valid JSON of the wrong shape."""
        import asyncpg

        from eventsource import PostgreSQLEventStore

        assert isinstance(store, PostgreSQLEventStore)
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(
                f"UPDATE {store.table} SET payload = '\"corrupt\"'::jsonb WHERE event_id = $1",
                event_id,
            )
        finally:
            await conn.close()
