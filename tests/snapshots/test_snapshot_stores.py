"""The snapshot contract on every backend (PostgreSQL in its own schema per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from uuid import uuid4

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
    async def _schema(self, postgres_url: str) -> AsyncIterator[None]:
        import asyncpg

        self.url = postgres_url
        self.schema = f"es_snap_{uuid4().hex[:12]}"
        yield
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()

    async def create_store(self) -> SnapshotStore:
        from eventsource.snapshots import PostgreSQLSnapshotStore

        store = PostgreSQLSnapshotStore.from_url(self.url, schema=self.schema, prefix="p_")
        await store.create_schema()
        return store
