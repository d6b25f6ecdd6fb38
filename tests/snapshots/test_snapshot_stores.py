"""The snapshot contract on every backend (PostgreSQL in its own schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsource.snapshots import InMemorySnapshotStore, SnapshotStore
from eventsource.testing import SnapshotStoreContract


class TestInMemorySnapshotStore(SnapshotStoreContract):
    async def create_store(self) -> SnapshotStore:
        return InMemorySnapshotStore()


@pytest.mark.sqlite
class TestSQLiteSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "snapshots.db"

    async def create_store(self) -> SnapshotStore:
        from eventsource.snapshots import SQLiteSnapshotStore

        return SQLiteSnapshotStore(self.path, table='snap "shots"')


@pytest.mark.postgresql
class TestPostgreSQLSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self) -> SnapshotStore:
        from eventsource.snapshots import PostgreSQLSnapshotStore

        store = PostgreSQLSnapshotStore.from_url(self.url, schema=self.schema, prefix="p_")
        await store.create_schema()
        return store
