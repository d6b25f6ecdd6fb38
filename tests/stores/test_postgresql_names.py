"""Schema names and table prefixes on PostgreSQL: counted in bytes, never cut short.

PostgreSQL keeps the first 63 bytes of a name. Every PostgreSQL component refuses a name it
would cut (two stores would share tables, constraint names would collide), and the NOTIFY
channel of a legal non-ASCII schema stays within 63 bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine

from eventsource.exceptions import ConfigurationError
from eventsource.migrations import derived_names
from eventsource.outbox.postgresql import PostgreSQLInboxRepository, PostgreSQLOutboxRepository
from eventsource.readmodels.postgresql import PostgreSQLReadModelRepository
from eventsource.repositories.postgresql import (
    PostgreSQLCheckpointRepository,
    PostgreSQLDLQRepository,
)
from eventsource.snapshots.postgresql import PostgreSQLSnapshotStore
from eventsource.stores.postgresql import PostgreSQLEventStore
from eventsource.testing.events import ItemAdded, contract_registry

pytestmark = pytest.mark.postgresql


class Row(BaseModel):
    id: str


LONGEST = max(len(name) for name in derived_names())


@pytest.fixture
async def dropped(postgres_url: str) -> AsyncIterator[list[str]]:
    """Schema names a test creates; dropped afterwards."""
    names: list[str] = []
    yield names
    conn = await asyncpg.connect(postgres_url)
    try:
        for name in names:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def _components(engine: AsyncEngine) -> list[Callable[..., Any]]:
    return [
        lambda **kw: PostgreSQLEventStore(engine, **kw),
        lambda **kw: PostgreSQLSnapshotStore(engine, **kw),
        lambda **kw: PostgreSQLCheckpointRepository(engine, **kw),
        lambda **kw: PostgreSQLDLQRepository(engine, **kw),
        lambda **kw: PostgreSQLOutboxRepository(engine, **kw),
        lambda **kw: PostgreSQLInboxRepository(engine, **kw),
    ]


async def test_non_ascii_schema_appends_and_notifies(
    engine: AsyncEngine, dropped: list[str]
) -> None:
    # 62 bytes but 39 characters: legal for PostgreSQL; the old channel, cut at 63
    # characters, was 69 bytes and made every append fail.
    schema = f"es_test_{uuid4().hex[:8]}" + "é" * 23
    dropped.append(schema)
    assert len(schema.encode()) == 62
    store = PostgreSQLEventStore(engine, schema=schema, registry=contract_registry)
    assert len(store.channel.encode()) <= 63
    async with store:
        await store.create_schema()
        async with store.listen() as signal:
            await store.append_events(uuid4(), "Cart", [ItemAdded(name="x")], 0)
            async with asyncio.timeout(5):
                await signal.wait()
    assert signal.received >= 1


async def test_schemas_differing_only_after_byte_63_are_refused(engine: AsyncEngine) -> None:
    # A security defect before: PostgreSQL cut both names to the same schema, so a
    # tenant_a store read tenant_b's events.
    common = "tenant_" + "x" * 56
    assert len(common.encode()) == 63
    for make in _components(engine):
        for schema in (common + "_a", common + "_b"):
            with pytest.raises(ConfigurationError, match="at most 63 bytes"):
                make(schema=schema)
    # Multi-byte characters count as bytes: 32 characters, 64 bytes.
    with pytest.raises(ConfigurationError, match="64 bytes"):
        PostgreSQLEventStore(engine, schema="é" * 32)
    with pytest.raises(ConfigurationError, match="at most 63 bytes"):
        PostgreSQLReadModelRepository(Row, engine, schema=common + "_a")


async def test_long_prefixes_are_refused_up_front(engine: AsyncEngine) -> None:
    prefix = "p" * (64 - LONGEST)
    for make in _components(engine):
        with pytest.raises(ConfigurationError, match=f"at most {63 - LONGEST} bytes"):
            make(prefix=prefix)
    with pytest.raises(ConfigurationError, match="read-model table name"):
        PostgreSQLReadModelRepository(Row, engine, table="t" * 60)


async def test_longest_accepted_prefix_creates_every_table(
    engine: AsyncEngine, schema: str
) -> None:
    # The bound is exact: one byte less than the refused prefix works end to end, with
    # every constraint and index name distinct (a cut name raised DuplicateObjectError).
    prefix = "ü" + "p" * (63 - LONGEST - 2)
    assert len((prefix + max(derived_names(), key=len)).encode()) == 63
    store = PostgreSQLEventStore(engine, schema=schema, prefix=prefix, registry=contract_registry)
    async with store:
        assert await store.create_schema()
        result = await store.append_events(uuid4(), "Cart", [ItemAdded(name="x")], 0)
        assert result.new_version == 1
    for make in _components(engine)[1:]:
        async with make(schema=schema, prefix=prefix) as component:
            assert await component.create_schema() == []  # one migration history per prefix
