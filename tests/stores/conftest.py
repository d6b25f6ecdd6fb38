"""Fixtures of the PostgreSQL store tests: a store in a schema of its own, and an engine for
tests that open transactions of their own (`store.using(conn)`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import contract_registry


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgreSQLEventStore]:
    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=contract_registry)
    await store.create_schema()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        postgres_url.replace("postgresql://", "postgresql+asyncpg://"), pool_size=20
    )
    try:
        yield engine
    finally:
        await engine.dispose()
