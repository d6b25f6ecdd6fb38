"""The pytest plugin: fixtures for testing an application built on eventsource.

Installed with the library (entry point `pytest11`), so the fixtures are there in every
project that has eventsource installed; a fixture of the same name in a `conftest.py` or
test module wins, as for any pytest plugin. Each fixture is new for each test:

- `event_store`: an `InMemoryEventStore`, or the store a URL names: `--eventsource-store-url`,
  else the environment variable `EVENTSOURCE_TEST_STORE_URL`, else the ini option
  `eventsource_store_url` (built by `eventsource.config.create_event_store`). On PostgreSQL
  each test gets its own schema, created before and dropped after the test; on SQLite its
  own table prefix.
- `event_bus`: a `RecordingEventBus` (in memory; records what was published).
- `repository_factory`: `repository_factory(Aggregate, **options)` makes an
  `AggregateRepository` on `event_store` that publishes to `event_bus`.
- `harness`: a started `Harness` on `event_store` and `event_bus`.
- `event_registry`: the `EventRegistry` the store and bus decode with (None: the default
  registry); override it in a conftest to use your own.

The async fixtures are `pytest_asyncio` fixtures, so they work in its "auto" and "strict"
modes alike (in strict mode, mark the tests `@pytest.mark.asyncio` as usual). Without
pytest-asyncio installed, requesting one fails with a message saying so.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from eventsource._internal.sql import quote_identifier
from eventsource.aggregates.base import AggregateRoot
from eventsource.aggregates.repository import AggregateRepository
from eventsource.config.databases import create_event_store, parse_database_url
from eventsource.events.registry import EventRegistry
from eventsource.stores.interface import EventStore
from eventsource.testing.harness import Harness
from eventsource.testing.recording import RecordingEventBus

__all__ = ["STORE_URL_ENV", "RepositoryFactory"]

STORE_URL_ENV = "EVENTSOURCE_TEST_STORE_URL"
_OPTION = "--eventsource-store-url"
_INI = "eventsource_store_url"

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)  # type: ignore[type-arg]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eventsource")
    group.addoption(
        _OPTION,
        default=None,
        help=f"database URL of the event_store fixture (default: ${STORE_URL_ENV}, else "
        "memory://), e.g. postgresql://localhost/test",
    )
    parser.addini(_INI, default="", help="database URL of the event_store fixture")


def store_url(config: pytest.Config) -> str:
    """The URL the `event_store` fixture builds its store from."""
    chosen = config.getoption(_OPTION) or os.environ.get(STORE_URL_ENV) or config.getini(_INI)
    return str(chosen or "memory://")


class RepositoryFactory:
    """Makes `AggregateRepository`s on one store, publishing to one bus; closes them at
    the end of the test."""

    def __init__(self, store: EventStore, bus: RecordingEventBus) -> None:
        self.store = store
        self.bus = bus
        self.made: list[AggregateRepository[Any]] = []

    def __call__(
        self, aggregate_class: Callable[[UUID], TAggregate], **options: Any
    ) -> AggregateRepository[TAggregate]:
        """A repository of `aggregate_class`; `options` are `AggregateRepository`'s
        (`aggregate_type=`, `snapshot_store=`, ...)."""
        options.setdefault("event_publisher", self.bus)
        repository = AggregateRepository(self.store, aggregate_class, **options)
        self.made.append(repository)
        return repository

    def create_repository(
        self,
        aggregate_class: Callable[[UUID], TAggregate],
        aggregate_type: str | None = None,
        **options: Any,
    ) -> AggregateRepository[TAggregate]:
        """The same, in the spelling of a repository factory
        (`factory.create_repository(Account, "Account")`)."""
        return self(aggregate_class, aggregate_type=aggregate_type, **options)

    async def close(self) -> None:
        for repository in self.made:
            await repository.close()


@pytest.fixture
def event_registry() -> EventRegistry | None:
    """The registry `event_store` and `event_bus` decode with (None: the default one)."""
    return None


async def _event_store(
    request: pytest.FixtureRequest, registry: EventRegistry | None
) -> AsyncIterator[EventStore]:
    url = store_url(request.config)
    backend = parse_database_url(url).backend
    options: dict[str, object] = {}
    name = f"es_test_{uuid4().hex[:16]}"
    if backend == "postgresql":
        options["schema"] = name
    elif backend == "sqlite":
        options["prefix"] = f"{name}_"
    store = create_event_store(url, registry=registry, **options)
    try:
        create_schema = getattr(store, "create_schema", None)
        if create_schema is not None:
            await create_schema()
        yield store
    finally:
        try:
            if backend == "postgresql":
                await _drop_schema(store, name)
        finally:
            await store.close()


async def _drop_schema(store: EventStore, schema: str) -> None:
    from sqlalchemy import text

    engine: Any = getattr(store, "engine")  # noqa: B009 - PostgreSQLEventStore's engine
    async with engine.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE"))


async def _event_bus(registry: EventRegistry | None) -> AsyncIterator[RecordingEventBus]:
    bus = RecordingEventBus(registry=registry)
    try:
        yield bus
    finally:
        await bus.close()


async def _repository_factory(
    store: EventStore, bus: RecordingEventBus
) -> AsyncIterator[RepositoryFactory]:
    factory = RepositoryFactory(store, bus)
    try:
        yield factory
    finally:
        await factory.close()


async def _harness(
    store: EventStore, bus: RecordingEventBus, registry: EventRegistry | None
) -> AsyncIterator[Harness]:
    async with Harness(store=store, bus=bus, registry=registry) as harness:
        yield harness


def _needs_pytest_asyncio() -> None:
    pytest.fail(
        "eventsource's async fixtures (event_store, event_bus, repository_factory, harness) "
        "need pytest-asyncio: pip install pytest-asyncio"
    )


def _async_fixture(function: Callable[..., AsyncIterator[Any]]) -> Any:
    """A pytest-asyncio fixture (working in its auto and strict modes), or, without
    pytest-asyncio, a fixture of the same name that fails saying what to install."""
    try:
        import pytest_asyncio
    except ImportError:
        return pytest.fixture(_needs_pytest_asyncio, name=function.__name__)
    return pytest_asyncio.fixture(function)


@_async_fixture
async def event_store(
    request: pytest.FixtureRequest, event_registry: EventRegistry | None
) -> AsyncIterator[EventStore]:
    """A new event store for the test (see the module docstring for the URL)."""
    async for store in _event_store(request, event_registry):
        yield store


@_async_fixture
async def event_bus(event_registry: EventRegistry | None) -> AsyncIterator[RecordingEventBus]:
    """A new `RecordingEventBus` for the test."""
    async for bus in _event_bus(event_registry):
        yield bus


@_async_fixture
async def repository_factory(
    event_store: EventStore, event_bus: RecordingEventBus
) -> AsyncIterator[RepositoryFactory]:
    """`repository_factory(Aggregate, **options)`: repositories on `event_store` publishing
    to `event_bus`."""
    async for factory in _repository_factory(event_store, event_bus):
        yield factory


@_async_fixture
async def harness(
    event_store: EventStore,
    event_bus: RecordingEventBus,
    event_registry: EventRegistry | None,
) -> AsyncIterator[Harness]:
    """A started `Harness` on `event_store` and `event_bus`."""
    async for running in _harness(event_store, event_bus, event_registry):
        yield running
