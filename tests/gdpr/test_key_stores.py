"""The key store contract on every backend (PostgreSQL in its own schema per test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsource.gdpr import InMemoryKeyStore, KeyStore
from eventsource.testing import KeyStoreContract


class TestInMemoryKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _storage(self) -> None:
        self.storage: dict[str, bytes] = {}

    async def create_store(self) -> KeyStore:
        return InMemoryKeyStore(self.storage)


@pytest.mark.sqlite
class TestSQLiteKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "keys.db"

    async def create_store(self) -> KeyStore:
        from eventsource.gdpr import SQLiteKeyStore

        return SQLiteKeyStore(self.path, table='gdpr "keys"')


@pytest.mark.postgresql
class TestPostgreSQLKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_store(self) -> KeyStore:
        from eventsource.gdpr import PostgreSQLKeyStore

        store = PostgreSQLKeyStore.from_url(self.url, schema=self.schema, prefix="k_")
        await store.create_schema()
        return store
