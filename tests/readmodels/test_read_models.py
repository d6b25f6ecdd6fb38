"""The read-model contract on every backend, what only one backend promises, and
`ReadModelProjection` run by a subscription.

PostgreSQL tests work in their own schema, dropped afterwards; SQLite tests in `tmp_path`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from eventsource import DomainEvent, EventRegistry, InMemoryEventStore, Position, StoredEvent
from eventsource._internal.clock import utc_now
from eventsource._internal.sql import quote_identifier
from eventsource.events.handlers import handles
from eventsource.exceptions import StoreSchemaError
from eventsource.readmodels import (
    InMemoryReadModelRepository,
    ReadModelProjection,
    ReadModelRepository,
    default_table,
)
from eventsource.readmodels.interface import TModel
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.subscriptions import SubscriptionConfig, SubscriptionManager
from eventsource.testing.read_models import ContractItem, ReadModelRepositoryContract

Factory = Callable[[type[Any]], Awaitable[ReadModelRepository[Any]]]


class TestInMemoryReadModelRepository(ReadModelRepositoryContract):
    async def create_repository(self, model: type[TModel]) -> ReadModelRepository[TModel]:
        return InMemoryReadModelRepository(model)

    async def corrupt(self, repository: ReadModelRepository[Any], id: str, data: str) -> None:
        assert isinstance(repository, InMemoryReadModelRepository)
        assert id in repository._rows
        repository._rows[id] = data


@pytest.mark.sqlite
class TestSQLiteReadModelRepository(ReadModelRepositoryContract):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "read-models.db"

    async def create_repository(self, model: type[TModel]) -> ReadModelRepository[TModel]:
        from eventsource.readmodels import SQLiteReadModelRepository

        return SQLiteReadModelRepository(model, self.path, table=f'odd "{model.__name__}" table')

    async def corrupt(self, repository: ReadModelRepository[Any], id: str, data: str) -> None:
        import aiosqlite

        table = quote_identifier(repository.table)
        async with aiosqlite.connect(self.path) as conn:
            cursor = await conn.execute(f"UPDATE {table} SET data = ? WHERE id = ?", (data, id))
            assert cursor.rowcount == 1
            await conn.commit()


@pytest.mark.postgresql
class TestPostgreSQLReadModelRepository(ReadModelRepositoryContract):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def create_repository(self, model: type[TModel]) -> ReadModelRepository[TModel]:
        from eventsource.readmodels import PostgreSQLReadModelRepository

        repository = PostgreSQLReadModelRepository.from_url(model, self.url, schema=self.schema)
        await repository.create_table()
        return repository

    async def corrupt(self, repository: ReadModelRepository[Any], id: str, data: str) -> None:
        import asyncpg

        from eventsource.readmodels import PostgreSQLReadModelRepository

        assert isinstance(repository, PostgreSQLReadModelRepository)
        conn = await asyncpg.connect(self.url)
        try:
            status = await conn.execute(
                f"UPDATE {repository.qualified} SET data = $2::jsonb WHERE id = $1", id, data
            )
        finally:
            await conn.close()
        assert status == "UPDATE 1"


class HTTPServerStats(BaseModel):
    id: str


def test_default_table_is_rm_and_the_class_name_in_snake_case() -> None:
    assert default_table(ContractItem) == "rm_contract_item"
    assert default_table(HTTPServerStats) == "rm_http_server_stats"
    assert InMemoryReadModelRepository(HTTPServerStats).table == "rm_http_server_stats"


class NoId(BaseModel):
    name: str


class IntId(BaseModel):
    id: int


@pytest.mark.parametrize("model", [NoId, IntId, dict])
def test_a_model_needs_an_id_field_of_uuid_or_str(model: type[Any]) -> None:
    with pytest.raises(TypeError, match="id"):
        InMemoryReadModelRepository(model)


def test_importing_read_models_imports_no_driver() -> None:
    code = (
        "import sys, eventsource.readmodels\n"
        "loaded = [d for d in ('asyncpg', 'aiosqlite') if d in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.postgresql
async def test_postgresql_table_missing_then_created_concurrently(
    postgres_url: str, schema: str
) -> None:
    from eventsource.readmodels import PostgreSQLReadModelRepository

    repositories = [
        PostgreSQLReadModelRepository.from_url(ContractItem, postgres_url, schema=schema)
        for _ in range(4)
    ]
    try:
        with pytest.raises(StoreSchemaError, match="create_table"):
            await repositories[0].get(uuid4())
        await asyncio.gather(*(repository.create_table() for repository in repositories))
        assert await repositories[0].count() == 0
        async with repositories[0].engine.connect() as conn:
            raw = await conn.get_raw_connection()
            indexes = await raw.driver_connection.fetch(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1", schema
            )
        assert any("gin (data jsonb_path_ops)" in row[0] for row in indexes)
    finally:
        for repository in repositories:
            await repository.close()


# ReadModelProjection, run by a subscription.

registry = EventRegistry()


class AccountOpened(DomainEvent, registry=registry):
    owner: str


class Deposited(DomainEvent, registry=registry):
    amount: int


class AccountClosed(DomainEvent, registry=registry):
    pass


class Summary(BaseModel):
    id: UUID
    owner: str
    balance: int = 0
    version: int = 0


class Summaries(ReadModelProjection[Summary]):
    """One summary per account; skips events older than the summary (idempotent)."""

    @handles(AccountOpened)
    async def _opened(self, event: AccountOpened) -> None:
        summary = await self.get_or_create(event.aggregate_id, owner=event.owner)
        if event.aggregate_version > summary.version:
            await self.models.save(summary.model_copy(update={"version": 1}))

    @handles(Deposited)
    async def _deposited(self, event: Deposited) -> None:
        def deposit(summary: Summary | None) -> Summary | None:
            assert summary is not None
            if event.aggregate_version <= summary.version:
                return summary
            return summary.model_copy(
                update={
                    "balance": summary.balance + event.amount,
                    "version": event.aggregate_version,
                }
            )

        await self.update(event.aggregate_id, deposit)

    @handles(AccountClosed)
    async def _closed(self, event: AccountClosed) -> None:
        await self.update(event.aggregate_id, lambda summary: None)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
async def summaries(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[ReadModelRepository[Summary]]:
    if request.param == "memory":
        yield InMemoryReadModelRepository(Summary)
    elif request.param == "sqlite":
        from eventsource.readmodels import SQLiteReadModelRepository

        async with SQLiteReadModelRepository(Summary, tmp_path / "summaries.db") as sqlite:
            yield sqlite
    else:
        import asyncpg

        from eventsource.readmodels import PostgreSQLReadModelRepository

        url, schema = request.getfixturevalue("postgres_url"), f"es_rm_{uuid4().hex[:12]}"
        try:
            async with PostgreSQLReadModelRepository.from_url(Summary, url, schema=schema) as pg:
                await pg.create_table()
                yield pg
        finally:
            conn = await asyncpg.connect(url)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()


async def test_projection_run_by_a_subscription_keeps_one_model_per_account(
    summaries: ReadModelRepository[Summary],
) -> None:
    store = InMemoryEventStore(registry=registry)
    ann, bob, cy = uuid4(), uuid4(), uuid4()
    await store.append_events(ann, "Account", [AccountOpened(owner="ann"), Deposited(amount=5)], 0)
    await store.append_events(bob, "Account", [AccountOpened(owner="bob")], 0)
    projection = Summaries(summaries)
    assert projection.interested_in() == {"AccountOpened", "Deposited", "AccountClosed"}
    config = SubscriptionConfig(poll_interval=0.05)
    async with SubscriptionManager(store, InMemoryCheckpointRepository(), config=config) as m:
        subscription = m.subscribe(projection)
        await store.append_events(ann, "Account", [Deposited(amount=7)], 2)
        await store.append_events(cy, "Account", [AccountOpened(owner="ann")], 0)
        await store.append_events(bob, "Account", [Deposited(amount=1), AccountClosed()], 1)
        await subscription.wait_for(await store.current_position(), timeout=10)
    assert await summaries.get(ann) == Summary(id=ann, owner="ann", balance=12, version=3)
    assert await summaries.get(cy) == Summary(id=cy, owner="ann", version=1)
    assert await summaries.get(bob) is None
    owned = await summaries.query(owner="ann", order_by="balance", descending=True)
    assert [summary.id for summary in owned] == [ann, cy]


def _stored(event: DomainEvent, aggregate_id: UUID, version: int) -> StoredEvent:
    attached = event.attached(aggregate_id, "Account", version)
    return StoredEvent(attached, Position(version, 0), utc_now())


async def test_a_redelivered_event_changes_nothing(
    summaries: ReadModelRepository[Summary],
) -> None:
    projection, account = Summaries(summaries), uuid4()
    opened = _stored(AccountOpened(owner="ann"), account, 1)
    deposited = _stored(Deposited(amount=5), account, 2)
    for stored in (opened, deposited, opened, deposited):
        await projection.handle(stored)
    assert await summaries.get(account) == Summary(id=account, owner="ann", balance=5, version=2)


async def test_get_or_create_and_update(summaries: ReadModelRepository[Summary]) -> None:
    projection, account = Summaries(summaries), uuid4()
    new = await projection.get_or_create(account, owner="ann")
    assert new == Summary(id=account, owner="ann")
    assert await summaries.get(account) is None  # not saved by get_or_create

    assert await projection.update(account, lambda summary: summary) is None
    assert await summaries.count() == 0

    saved = await projection.update(account, lambda summary: summary or new)
    assert saved == new
    assert await projection.get_or_create(account, owner="other") == new

    def bump(summary: Summary | None) -> Summary | None:
        assert summary is not None
        return summary.model_copy(update={"balance": summary.balance + 3})

    assert await projection.update(account, bump) == Summary(id=account, owner="ann", balance=3)
    assert await summaries.get(account) == Summary(id=account, owner="ann", balance=3)

    with pytest.raises(ValueError, match="id"):
        await projection.update(account, lambda summary: Summary(id=uuid4(), owner="x"))
    assert await projection.update(account, lambda summary: None) is None
    assert await summaries.get(account) is None
