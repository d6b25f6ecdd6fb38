"""The package guide's "stores/" and "repositories/" sections, its "Event Stores" and
"Repositories" API lists and its "Custom Event Store" extension point, run as written (elided
parts filled in: ids, events, a schema per test), in memory and on PostgreSQL.

Events live in their own registry so the guide's class names do not clash with other tests.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from eventsource import (
    AppendResult,
    DLQEntry,
    DomainEvent,
    EventRegistry,
    EventStore,
    EventStream,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
    InMemoryEventStore,
    LagMetrics,
)
from eventsource.exceptions import ConfigurationError, EventNotFoundError
from eventsource.stores.interface import (
    AppendSignal,
    AppendSignals,
    Position,
    ReadOptions,
    StoredEvent,
)
from eventsource.testing import capture_telemetry

REGISTRY = EventRegistry()


class OrderCreated(DomainEvent, registry=REGISTRY):
    customer: str = "ada"


class OrderShipped(DomainEvent, registry=REGISTRY):
    carrier: str = "post"


class OrderNoted(DomainEvent, registry=REGISTRY):
    note: str = ""


# -- the guide's API lists and module tree ------------------------------------------------


def test_event_store_and_repository_names_import_from_eventsource() -> None:
    from eventsource import (  # noqa: F401  (the guide's "Event Stores" list, as written)  # noqa: F401  (the guide's "Repositories" list, as written)
        AppendResult,
        CheckpointData,
        CheckpointRepository,
        DLQEntry,
        DLQRepository,
        DLQStats,
        EventPublisher,
        EventSourceJSONEncoder,
        EventStore,
        EventStream,
        ExpectedVersion,
        InMemoryCheckpointRepository,
        InMemoryDLQRepository,
        InMemoryEventStore,
        InMemoryOutboxRepository,
        LagMetrics,
        OutboxEntry,
        OutboxRepository,
        OutboxStats,
        PostgreSQLCheckpointRepository,
        PostgreSQLDLQRepository,
        PostgreSQLEventStore,
        PostgreSQLOutboxRepository,
        ProjectionFailureCount,
        ReadDirection,
        ReadOptions,
        StoredEvent,
    )

    assert ReadDirection.FORWARD != ReadDirection.BACKWARD


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("eventsource.stores.interface", ["EventStore", "EventStream", "ReadDirection"]),
        ("eventsource.stores.in_memory", ["InMemoryEventStore"]),
        ("eventsource.stores.postgresql", ["PostgreSQLEventStore"]),
        (
            "eventsource.repositories.checkpoint",
            [
                "CheckpointRepository",
                "CheckpointData",
                "LagMetrics",
                "InMemoryCheckpointRepository",
                "PostgreSQLCheckpointRepository",
            ],
        ),
        (
            "eventsource.repositories.dlq",
            [
                "DLQRepository",
                "DLQEntry",
                "DLQStats",
                "ProjectionFailureCount",
                "InMemoryDLQRepository",
                "PostgreSQLDLQRepository",
            ],
        ),
        (
            "eventsource.repositories.outbox",
            [
                "OutboxRepository",
                "OutboxEntry",
                "OutboxStats",
                "InMemoryOutboxRepository",
                "PostgreSQLOutboxRepository",
            ],
        ),
        ("eventsource.repositories._json", ["json_dumps", "EventSourceJSONEncoder"]),
    ],
)
def test_guide_module_paths_hold_the_guide_names(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    import eventsource

    for name in names:
        held = getattr(imported, name)
        if hasattr(eventsource, name):
            assert held is getattr(eventsource, name), name  # one implementation


def test_internal_json_dumps_uses_the_public_encoder() -> None:
    from eventsource.repositories._json import json_dumps

    event_id = uuid4()
    assert json_dumps({"id": event_id}) == f'{{"id": "{event_id}"}}'


# -- stores --------------------------------------------------------------------------------


async def test_in_memory_store_example_and_get_events() -> None:
    store = InMemoryEventStore(registry=REGISTRY)
    order_id = uuid4()
    order_created = OrderCreated()
    result = await store.append_events(
        aggregate_id=order_id,
        aggregate_type="Order",
        events=[order_created],
        expected_version=0,
    )
    assert isinstance(result, AppendResult)
    assert result.new_version == 1
    await _check_get_events(store, order_id)


async def _check_get_events(store: EventStore, order_id: UUID) -> None:
    later = datetime.now().astimezone() + timedelta(hours=1)
    shipped = OrderShipped(occurred_at=later)
    await store.append_events(order_id, "Order", [shipped], expected_version=1)

    stream = await store.get_events(order_id)
    assert isinstance(stream, EventStream)
    assert [type(e) for e in stream.events] == [OrderCreated, OrderShipped]
    assert stream.version == 2
    # The guide's positional order and defaults: aggregate_type, from_version=0, timestamps.
    assert len(await store.get_events(order_id, "Order", 0)) == 2
    assert len(await store.get_events(order_id, "Order", 2)) == 1
    until_now = await store.get_events(order_id, to_timestamp=later - timedelta(minutes=1))
    assert [type(e) for e in until_now.events] == [OrderCreated]
    since_later = await store.get_events(order_id, from_timestamp=later)
    assert [e.event_id for e in since_later.events] == [shipped.event_id]

    other = uuid4()
    await store.append_events(other, "Invoice", [OrderNoted()], expected_version=0)
    by_type = await store.get_events_by_type("Order")
    assert [e.aggregate_id for e in by_type] == [order_id, order_id]
    assert [type(e) for e in await store.get_events_by_type("Invoice")] == [OrderNoted]
    assert [type(e) for e in await store.get_events_by_type("Order", from_timestamp=later)] == [
        OrderShipped
    ]


def _asyncpg_url(postgres_url: str) -> str:
    return postgres_url.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.mark.postgresql
async def test_postgresql_store_from_session_factory_as_in_the_guide(
    postgres_url: str, schema: str
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    from eventsource import PostgreSQLEventStore, PostgreSQLOutboxRepository

    engine = create_async_engine(_asyncpg_url(postgres_url))
    session_factory = async_sessionmaker(engine, expire_on_commit=False)
    store = PostgreSQLEventStore(
        session_factory,
        outbox_enabled=True,
        enable_tracing=True,
        schema=schema,
        registry=REGISTRY,
    )
    try:
        await store.create_schema()
        order_id = uuid4()
        await store.append_events(order_id, "Order", [OrderCreated()], expected_version=0)
        await _check_get_events(store, order_id)
        outbox = PostgreSQLOutboxRepository.for_store(store)
        assert (await outbox.stats()).pending == 3  # outbox_enabled: every append queued
        await outbox.close()
    finally:
        await store.close()
        await engine.dispose()


async def test_enable_tracing_false_leaves_appends_out_of_spans() -> None:
    traced = InMemoryEventStore(registry=REGISTRY)
    untraced = InMemoryEventStore(registry=REGISTRY)
    untraced.enable_tracing = False
    with capture_telemetry() as captured:
        await traced.append_events(uuid4(), "Order", [OrderCreated()], expected_version=0)
        spans_after_traced = len(captured.spans())
        await untraced.append_events(uuid4(), "Order", [OrderCreated()], expected_version=0)
        assert len(captured.spans()) == spans_after_traced
    assert spans_after_traced >= 1


@pytest.mark.postgresql
async def test_postgresql_enable_tracing_false(postgres_url: str, schema: str) -> None:
    from eventsource import PostgreSQLEventStore

    store = PostgreSQLEventStore.from_url(postgres_url, schema=schema, registry=REGISTRY)
    quiet = PostgreSQLEventStore(store.engine, schema=schema, enable_tracing=False)
    try:
        await store.create_schema()
        async with store.engine.connect() as conn:
            assert quiet.using(conn).enable_tracing is False
        with capture_telemetry() as captured:
            await quiet.append_events(uuid4(), "Order", [OrderCreated()], expected_version=0)
            assert captured.spans("eventsource.append") == []
    finally:
        await quiet.close()
        await store.close()


class MongoDBEventStore(EventStore):
    """The guide's "Custom Event Store": `append_events` and `get_events` written by hand,
    the other abstract methods filled in (over a dict instead of MongoDB)."""

    def __init__(self) -> None:
        self._streams: dict[UUID, list[DomainEvent]] = {}
        self._feed: list[StoredEvent] = []
        self._signals = AppendSignals()

    async def append_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        events: Sequence[DomainEvent],
        expected_version: int,
    ) -> AppendResult:
        stream = self._streams.setdefault(aggregate_id, [])
        if expected_version != len(stream):
            from eventsource import OptimisticLockError

            raise OptimisticLockError(aggregate_id, expected_version, len(stream))
        stamped = [
            e.attached(aggregate_id, aggregate_type, len(stream) + i + 1)
            for i, e in enumerate(events)
        ]
        stream.extend(stamped)
        positions = []
        for event in stamped:
            position = Position(len(self._feed) + 1, 0)
            self._feed.append(StoredEvent(event, position, event.occurred_at))
            positions.append(position)
        self._signals.signal_append()
        return AppendResult(aggregate_id, len(stream), tuple(stamped), tuple(positions))

    async def get_events(
        self,
        aggregate_id: UUID,
        aggregate_type: str | None = None,
        from_version: int = 0,
        from_timestamp: datetime | None = None,
        to_timestamp: datetime | None = None,
        *,
        to_version: int | None = None,
    ) -> EventStream:
        events = [
            e for e in self._streams.get(aggregate_id, []) if e.aggregate_version >= from_version
        ]
        return EventStream(
            aggregate_id, aggregate_type, events, len(self._streams.get(aggregate_id, []))
        )

    async def read_stream(
        self, aggregate_id: UUID, options: ReadOptions | None = None
    ) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        for stored in self._feed:
            last = options.to_version if options.to_version is not None else stored.version
            if (
                stored.aggregate_id == aggregate_id
                and options.from_version <= stored.version <= last
            ):
                yield stored

    async def read_all(self, options: ReadOptions | None = None) -> AsyncIterator[StoredEvent]:
        options = options or ReadOptions()
        for stored in self._feed:
            if options.after is None or stored.position > options.after:
                yield stored

    async def current_position(self) -> Position:
        return self._feed[-1].position if self._feed else Position.START

    async def get_stream_version(self, aggregate_id: UUID) -> int:
        return len(self._streams.get(aggregate_id, []))

    async def event_exists(self, event_id: UUID) -> bool:
        return any(s.event_id == event_id for s in self._feed)

    async def get_event(self, event_id: UUID) -> StoredEvent:
        for stored in self._feed:
            if stored.event_id == event_id:
                return stored
        raise EventNotFoundError(event_id)

    def listen(self) -> contextlib.AbstractAsyncContextManager[AppendSignal]:
        return self._signals.listen()


async def test_custom_event_store_as_in_extension_points() -> None:
    store = MongoDBEventStore()  # instantiable: append_events stands for _append_events
    order_id = uuid4()
    result = await store.append_events(order_id, "Order", [OrderCreated()], 0)
    assert result.new_version == 1
    stream = await store.get_events(order_id)
    assert [type(e) for e in stream.events] == [OrderCreated]

    # The library's own append path (`_append_events`) runs the hand-written append.
    internal = await store._append_events(order_id, "Order", [OrderShipped()], 1)
    assert internal.new_version == 2
    assert len(await store.get_events(order_id)) == 2


# -- repositories --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _in_memory() -> AsyncIterator[tuple[EventStore, Any, Any]]:
    store = InMemoryEventStore(registry=REGISTRY)
    yield (
        store,
        InMemoryCheckpointRepository(event_store=store),
        InMemoryDLQRepository(event_store=store),
    )


@contextlib.asynccontextmanager
async def _postgresql(postgres_url: str, schema: str) -> AsyncIterator[tuple[EventStore, Any, Any]]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from eventsource import (
        PostgreSQLCheckpointRepository,
        PostgreSQLDLQRepository,
        PostgreSQLEventStore,
    )

    engine = create_async_engine(_asyncpg_url(postgres_url))
    store = PostgreSQLEventStore(engine, schema=schema, registry=REGISTRY)
    await store.create_schema()
    async with engine.connect() as conn:
        # The guide builds repositories from a connection.
        checkpoints = PostgreSQLCheckpointRepository(conn, schema=schema)
        dead_letters = PostgreSQLDLQRepository(conn, schema=schema, event_store=store)
    try:
        yield store, checkpoints, dead_letters
    finally:
        await checkpoints.close()
        await dead_letters.close()
        await store.close()
        await engine.dispose()


async def test_checkpoint_example_in_memory() -> None:
    async with _in_memory() as (store, repo, _):
        await _checkpoint_example(store, repo)


@pytest.mark.postgresql
async def test_checkpoint_example_on_postgresql(postgres_url: str, schema: str) -> None:
    async with _postgresql(postgres_url, schema) as (store, repo, _):
        await _checkpoint_example(store, repo)


async def _checkpoint_example(store: EventStore, repo: Any) -> None:
    order_id = uuid4()
    created, noted, shipped = OrderCreated(), OrderNoted(), OrderShipped()
    result = await store.append_events(order_id, "Order", [created, noted, shipped], 0)
    event = result.events[0]

    last_event_id = await repo.get_checkpoint("MyProjection")
    assert last_event_id is None

    await repo.update_checkpoint("MyProjection", event.event_id, event.event_type)
    assert await repo.get_checkpoint("MyProjection") == created.event_id
    saved = await repo.get("MyProjection")
    assert saved.position == result.positions[0]  # the event's position in the feed
    assert saved.event_type == "OrderCreated"

    metrics = await repo.get_lag_metrics("MyProjection", ["OrderCreated", "OrderShipped"])
    assert isinstance(metrics, LagMetrics)
    assert metrics.projection_name == "MyProjection"
    assert metrics.last_event_id == created.event_id
    assert metrics.latest_event_id == shipped.event_id
    assert metrics.events_behind == 1  # OrderNoted is not among the types
    assert (await repo.get_lag_metrics("MyProjection")).events_behind == 2
    assert await repo.get_lag_metrics("Nobody", ["OrderCreated"]) is None

    await repo.update_checkpoint("MyProjection", shipped.event_id, "OrderShipped")
    caught_up = await repo.get_lag_metrics("MyProjection", ["OrderCreated", "OrderShipped"])
    assert (caught_up.events_behind, caught_up.lag_seconds) == (0, 0.0)
    # Like `save`, an older event never moves the checkpoint back.
    await repo.update_checkpoint("MyProjection", created.event_id, "OrderCreated")
    assert await repo.get_checkpoint("MyProjection") == shipped.event_id
    (data,) = await repo.get_all_checkpoints()
    assert (data.projection_name, data.last_event_id, data.events_processed) == (
        "MyProjection",
        shipped.event_id,
        2,
    )

    with pytest.raises(EventNotFoundError):
        await repo.update_checkpoint("MyProjection", uuid4(), "OrderCreated")


async def test_checkpoint_event_id_form_needs_a_store() -> None:
    repo = InMemoryCheckpointRepository()
    with pytest.raises(ConfigurationError, match="event_store="):
        await repo.update_checkpoint("MyProjection", uuid4(), "OrderCreated")


async def test_dlq_example_in_memory() -> None:
    async with _in_memory() as (store, _, repo):
        await _dlq_example(store, repo)


@pytest.mark.postgresql
async def test_dlq_example_on_postgresql(postgres_url: str, schema: str) -> None:
    async with _postgresql(postgres_url, schema) as (store, _, repo):
        await _dlq_example(store, repo)


async def _dlq_example(store: EventStore, repo: Any) -> None:
    order_id = uuid4()
    result = await store.append_events(order_id, "Order", [OrderCreated(), OrderShipped()], 0)
    event = result.events[1]
    exception = ValueError("carrier unknown")

    await repo.add_failed_event(
        event_id=event.event_id,
        projection_name="MyProjection",
        event_type=event.event_type,
        event_data=event.to_dict(),
        error=exception,
    )

    failed = await repo.get_failed_events(projection_name="MyProjection")
    (entry,) = failed
    assert isinstance(entry, DLQEntry)
    assert (entry.event_id, entry.event_type, entry.status) == (
        event.event_id,
        "OrderShipped",
        "failed",
    )
    assert entry.error_message == "ValueError: carrier unknown"
    assert entry.event_data["carrier"] == "post"
    letter = await repo.get(entry.id)
    assert letter.position == result.positions[1]  # found in the store the repository reaches
    assert not letter.undecodable  # read through the store's registry

    stats = await repo.get_failure_stats()
    assert (stats.total_failed, stats.affected_projections) == (1, 1)
    (count,) = await repo.get_projection_failure_counts()
    assert (count.projection_name, count.failure_count) == ("MyProjection", 1)

    dlq_id = entry.id
    assert await repo.mark_resolved(dlq_id, resolved_by="admin") is True
    assert await repo.get_failed_events(projection_name="MyProjection") == []
    (resolved,) = await repo.get_failed_events(projection_name="MyProjection", status=None)
    assert (resolved.status, resolved.resolved_by) == ("resolved", "admin")
    assert await repo.mark_resolved(dlq_id, resolved_by="admin") is False


async def test_dlq_example_without_a_store_keeps_the_event_data() -> None:
    repo = InMemoryDLQRepository()
    event = OrderShipped(aggregate_id=uuid4(), aggregate_type="Order", aggregate_version=2)
    entry = await repo.add_failed_event(
        event_id=event.event_id,
        projection_name="MyProjection",
        event_type=event.event_type,
        event_data=event.to_dict(),
        error=RuntimeError("boom"),
    )
    assert entry.event_data == event.to_dict()
    letter = await repo.get(entry.id)
    assert (letter.position, letter.aggregate_id) == (Position.START, event.aggregate_id)


async def _outbox_example(repo: Any) -> None:
    from eventsource import InMemoryEventBus
    from eventsource.events.serialization import EventCodec

    received: list[DomainEvent] = []
    event_bus = InMemoryEventBus(registry=REGISTRY)
    event_bus.subscribe(OrderCreated, received.append)
    order_id = uuid4()
    event = OrderCreated().attached(order_id, "Order", 1)

    # Add event to outbox (in same transaction as event store)
    outbox_id = await repo.add_event(event)

    # Background worker publishes and marks complete
    pending = await repo.get_pending_events(limit=100)
    assert [entry.id for entry in pending] == [outbox_id]
    codec = EventCodec(REGISTRY)
    for entry in pending:
        await event_bus.publish(
            [codec.decode(entry.event_type, entry.event_version, entry.payload)]
        )
        await repo.mark_published(entry.id)
    await event_bus.close()

    assert [e.event_id for e in received] == [event.event_id]
    assert await repo.get_pending_events(limit=100) == []
    assert (await repo.stats()).published == 1


async def test_outbox_example_in_memory() -> None:
    from eventsource import InMemoryOutboxRepository

    await _outbox_example(InMemoryOutboxRepository())


@pytest.mark.postgresql
async def test_outbox_example_on_postgresql(postgres_url: str, schema: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from eventsource import PostgreSQLOutboxRepository

    engine = create_async_engine(_asyncpg_url(postgres_url))
    async with engine.connect() as conn:
        repo = PostgreSQLOutboxRepository(conn, schema=schema)  # from a connection
    try:
        await repo.create_schema()
        await _outbox_example(repo)
    finally:
        await repo.close()
        await engine.dispose()


@pytest.mark.sqlite
async def test_checkpoint_and_dlq_examples_on_sqlite(tmp_path: Any) -> None:
    from eventsource import SQLiteCheckpointRepository, SQLiteDLQRepository, SQLiteEventStore

    path = tmp_path / "guide.db"
    store = SQLiteEventStore(path, registry=REGISTRY)
    checkpoints = SQLiteCheckpointRepository(path, event_store=store)
    dead_letters = SQLiteDLQRepository(path, event_store=store)
    try:
        await _checkpoint_example(store, checkpoints)
        await _dlq_example(store, dead_letters)
    finally:
        await checkpoints.close()
        await dead_letters.close()
        await store.close()
