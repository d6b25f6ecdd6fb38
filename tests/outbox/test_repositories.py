"""The outbox and inbox contracts on every backend (PostgreSQL in a schema of its own, SQLite
in `tmp_path`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsource.outbox import (
    InboxRepository,
    InMemoryInboxRepository,
    InMemoryOutboxRepository,
    OutboxRepository,
)
from eventsource.testing import InboxRepositoryContract, OutboxRepositoryContract


class TestInMemoryOutbox(OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        return InMemoryOutboxRepository()


class TestInMemoryInbox(InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        return InMemoryInboxRepository()


class _SQLiteFile:
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "outbox.db"


@pytest.mark.sqlite
class TestSQLiteOutbox(_SQLiteFile, OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        from eventsource.outbox import SQLiteOutboxRepository

        return SQLiteOutboxRepository(self.path, table='my "odd" outbox')


@pytest.mark.sqlite
class TestSQLiteInbox(_SQLiteFile, InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        from eventsource.outbox import SQLiteInboxRepository

        return SQLiteInboxRepository(self.path)


class _PostgreSQLSchema:
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema


@pytest.mark.postgresql
class TestPostgreSQLOutbox(_PostgreSQLSchema, OutboxRepositoryContract):
    async def create_outbox(self) -> OutboxRepository:
        from eventsource.outbox import PostgreSQLOutboxRepository

        outbox = PostgreSQLOutboxRepository.from_url(self.url, schema=self.schema, prefix="x_")
        await outbox.create_schema()
        return outbox


@pytest.mark.postgresql
class TestPostgreSQLInbox(_PostgreSQLSchema, InboxRepositoryContract):
    async def create_inbox(self) -> InboxRepository:
        from eventsource.outbox import PostgreSQLInboxRepository

        inbox = PostgreSQLInboxRepository.from_url(self.url, schema=self.schema)
        await inbox.create_schema()
        return inbox
