"""A database migrated by a newer release: refused by default, a loud warning when allowed.

The unknown version is one past the newest migration this checkout ships, so the tests hold
whatever migrations are added.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventsource.exceptions import StoreSchemaError
from eventsource.migrations import load_migrations
from eventsource.snapshots.postgresql import PostgreSQLSnapshotStore
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import contract_registry

pytestmark = pytest.mark.postgresql

FUTURE = max(migration.version for migration in load_migrations("postgresql")) + 1


@pytest.fixture
async def store(postgres_url: str, schema: str) -> AsyncIterator[PostgreSQLEventStore]:
    """A migrated store whose history then records a migration from a newer release."""
    async with PostgreSQLEventStore.from_url(
        postgres_url, schema=schema, prefix="app_", registry=contract_registry
    ) as store:
        await store.create_schema()
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(
                f'INSERT INTO "{schema}"."app_migrations" (version, name, checksum)'
                " VALUES ($1, 'from_the_future', 'x')",
                FUTURE,
            )
        finally:
            await conn.close()
        yield store


async def test_unknown_migration_is_refused(store: PostgreSQLEventStore, postgres_url: str) -> None:
    with pytest.raises(StoreSchemaError) as caught:
        await store.create_schema()
    message = str(caught.value)
    assert f"{FUTURE:04d}_from_the_future" in message
    assert "Upgrade eventsource-async" in message
    assert "allow_newer=True" in message
    # Every component runs the same migrations, so each refuses the same way.
    async with PostgreSQLSnapshotStore.from_url(
        postgres_url, schema=store.schema, prefix="app_"
    ) as snapshots:
        with pytest.raises(StoreSchemaError, match="from_the_future"):
            await snapshots.create_schema()


async def test_allowed_newer_schema_warns_and_continues(store: PostgreSQLEventStore) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await store.create_schema(allow_newer=True) == []
    (warning,) = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert f"{FUTURE:04d}_from_the_future" in str(warning.message)
