"""The package guide's "projections/" and "bus/" sections, its "Event Bus" API list and its
"Custom Projection" / "Custom Event Bus" extension points, run as written (elided parts
filled in): in memory, on PostgreSQL where the guide writes SQL, on Redis for `RedisEventBus`.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventsource import DomainEvent, EventRegistry
from eventsource.exceptions import ConfigurationError
from eventsource.stores.interface import StoredEvent

registry = EventRegistry()
"""The module's own registry: other test modules define their `OrderCreated` too."""


class OrderCreated(DomainEvent, registry=registry):
    aggregate_type: str = "Order"
    customer: str = "ada"


class OrderShipped(DomainEvent, registry=registry):
    aggregate_type: str = "Order"


def created(order_id: UUID | None = None) -> OrderCreated:
    return OrderCreated(aggregate_id=order_id or uuid4(), aggregate_version=1)


def shipped(order_id: UUID) -> OrderShipped:
    return OrderShipped(aggregate_id=order_id, aggregate_version=2)


def stored(event: DomainEvent, position: int) -> StoredEvent:
    return StoredEvent(event, position, datetime.now(UTC))


# -- module paths and names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "eventsource.projections.base",
            [
                "Projection",
                "EventHandlerBase",
                "CheckpointTrackingProjection",
                "DeclarativeProjection",
            ],
        ),
        ("eventsource.projections.decorators", ["handles"]),
        ("eventsource.projections.protocols", ["EventSubscriber"]),
        ("eventsource.projections.coordinator", ["ProjectionCoordinator", "ProjectionRegistry"]),
        (
            "eventsource.bus.interface",
            ["EventBus", "EventHandler", "EventSubscriber", "EventHandlerFunc"],
        ),
        ("eventsource.bus.interface", ["AsyncEventHandler"]),
        ("eventsource.bus.memory", ["InMemoryEventBus"]),
        ("eventsource.bus.redis", ["RedisEventBus", "RedisEventBusConfig", "RedisEventBusStats"]),
        ("eventsource.bus", ["RedisEventBus", "RedisEventBusConfig"]),
        ("eventsource.handlers", ["handles"]),
    ],
)
def test_guide_module_paths_hold_the_guide_names(module: str, names: list[str]) -> None:
    imported = importlib.import_module(module)
    for name in names:
        assert getattr(imported, name) is not None, f"{module}.{name}"


def test_guide_aliases_are_one_implementation() -> None:
    import eventsource
    from eventsource.bus.in_memory import InMemoryEventBus
    from eventsource.bus.memory import InMemoryEventBus as GuideBus
    from eventsource.events.handlers import handles
    from eventsource.handlers import handles as guide_handles
    from eventsource.projections.coordinator import ProjectionCoordinator
    from eventsource.projections.decorators import handles as projection_handles
    from eventsource.projections.protocols import EventSubscriber

    assert GuideBus is InMemoryEventBus
    assert guide_handles is handles is projection_handles is eventsource.handles
    assert ProjectionCoordinator is eventsource.ProjectionRegistry
    assert EventSubscriber is eventsource.EventSubscriber


def test_event_bus_api_surface_imports() -> None:
    from eventsource import (  # noqa: F401 - the guide's list, as written
        REDIS_AVAILABLE,
        AsyncEventHandler,
        EventBus,
        EventHandler,
        EventHandlerFunc,
        EventSubscriber,
        InMemoryEventBus,
        RedisEventBus,
        RedisEventBusConfig,
        RedisEventBusStats,
        RedisNotAvailableError,
    )

    assert REDIS_AVAILABLE is True
    assert issubclass(RedisNotAvailableError, ImportError)


# -- projections ---------------------------------------------------------------------------


class SubscriberProjection:
    """protocols.py's `OrderProjection`: no base class, `subscribed_to()` + `handle(event)`."""

    def __init__(self) -> None:
        self.seen: list[DomainEvent] = []

    def subscribed_to(self) -> list[type[DomainEvent]]:
        return [OrderCreated, OrderShipped]

    async def handle(self, event: DomainEvent) -> None:
        self.seen.append(event)


def make_declarative() -> Any:
    from eventsource.projections import DeclarativeProjection, handles

    class InventoryProjection(DeclarativeProjection):
        def __init__(self) -> None:
            super().__init__()
            self.created: list[UUID] = []

        @handles(OrderCreated)
        def _on_created(self, event: OrderCreated) -> None:
            self.created.append(event.aggregate_id)

    return InventoryProjection()


async def test_event_subscriber_protocol_and_registry_dispatch_a_plain_event() -> None:
    from eventsource.projections import ProjectionRegistry
    from eventsource.projections.protocols import EventSubscriber

    orders, inventory = SubscriberProjection(), make_declarative()
    assert isinstance(orders, EventSubscriber)

    registry = ProjectionRegistry()
    registry.register_projection(orders)
    registry.register_projection(inventory)

    first = created()
    await registry.dispatch(first)
    await registry.dispatch(shipped(first.aggregate_id))
    await registry.dispatch(stored(created(), 3))  # what a subscription delivers works too

    assert [type(e) for e in orders.seen] == [OrderCreated, OrderShipped, OrderCreated]
    assert orders.seen[0] is first
    assert inventory.created[0] == first.aggregate_id
    assert len(inventory.created) == 2
    assert registry.interested_in() == {"OrderCreated", "OrderShipped"}


async def test_coordinator_refuses_a_plain_event_for_a_positioned_projection() -> None:
    from eventsource import InMemoryCheckpointRepository
    from eventsource.projections import CheckpointTrackingProjection, handles
    from eventsource.projections.coordinator import ProjectionCoordinator

    class Tracked(CheckpointTrackingProjection):
        @handles(OrderCreated)
        def _on_created(self, event: OrderCreated) -> None: ...

    coordinator = ProjectionCoordinator([Tracked(InMemoryCheckpointRepository())])
    with pytest.raises(TypeError, match="StoredEvent"):
        await coordinator.dispatch(created())


async def test_connection_handler_without_engine_says_what_to_do() -> None:
    from eventsource.projections import DeclarativeProjection, handles

    class NeedsConnection(DeclarativeProjection):
        @handles(OrderCreated)
        async def _on_created(self, conn: Any, event: OrderCreated) -> None: ...

    with pytest.raises(ConfigurationError, match=r"engine=") as caught:
        await NeedsConnection().handle(created())
    assert "NeedsConnection._on_created" in str(caught.value)


@pytest.fixture
async def engine(postgres_url: str, schema: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        postgres_url.replace("postgresql://", "postgresql+asyncpg://"),
        connect_args={"server_settings": {"search_path": schema}},
    )
    async with engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute(f'CREATE SCHEMA "{schema}"')
        await raw.execute(
            "CREATE TABLE order_dashboard (order_id uuid PRIMARY KEY, status text NOT NULL)"
        )
    try:
        yield engine
    finally:
        await engine.dispose()


async def dashboard(engine: AsyncEngine) -> dict[UUID, str]:
    async with engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        rows = await raw.fetch("SELECT order_id, status FROM order_dashboard")
    return {row["order_id"]: row["status"] for row in rows}


@pytest.mark.postgresql
async def test_custom_projection_with_connection_handlers_on_postgresql(
    engine: AsyncEngine,
) -> None:
    # "Custom Projection" and decorators.py, as written: handlers take (self, conn, event).
    from eventsource.projections import DeclarativeProjection, handles

    class OrderDashboardProjection(DeclarativeProjection):
        @handles(OrderCreated)
        async def _on_order_created(self, conn: Any, event: OrderCreated) -> None:
            await conn.execute(
                "INSERT INTO order_dashboard (order_id, status) VALUES ($1, $2)",
                event.aggregate_id,
                "created",
            )

        @handles(OrderShipped)
        async def _on_order_shipped(self, conn: Any, event: OrderShipped) -> None:
            await conn.execute(
                "UPDATE order_dashboard SET status = $1 WHERE order_id = $2",
                "shipped",
                event.aggregate_id,
            )

    projection = OrderDashboardProjection(engine=engine)
    one, two = created(), created()
    await projection.handle(one)
    await projection.handle(stored(two, 2))
    await projection.handle(shipped(one.aggregate_id))

    assert await dashboard(engine) == {one.aggregate_id: "shipped", two.aggregate_id: "created"}


@pytest.mark.postgresql
async def test_connection_handler_failure_rolls_its_transaction_back(engine: AsyncEngine) -> None:
    from eventsource.projections import DeclarativeProjection, handles

    class HalfWay(DeclarativeProjection):
        @handles(OrderCreated)
        async def _on_created(self, conn: Any, event: OrderCreated) -> None:
            await conn.execute(
                "INSERT INTO order_dashboard (order_id, status) VALUES ($1, 'created')",
                event.aggregate_id,
            )
            raise RuntimeError("after the insert")

    with pytest.raises(RuntimeError, match="after the insert"):
        await HalfWay(engine=engine).handle(created())
    assert await dashboard(engine) == {}


# -- InMemoryEventBus ----------------------------------------------------------------------


async def test_in_memory_bus_as_in_the_guide() -> None:
    from eventsource import InMemoryEventBus

    orders: list[UUID] = []
    audit: list[str] = []

    def order_handler(event: OrderCreated) -> None:  # sync handler
        orders.append(event.aggregate_id)

    async def audit_logger(event: DomainEvent) -> None:  # async handler
        await asyncio.sleep(0)
        audit.append(event.event_type)

    bus = InMemoryEventBus(registry=registry)
    bus.subscribe(OrderCreated, order_handler)
    bus.subscribe_to_all_events(audit_logger)

    event = created()
    # Synchronous (wait for handlers)
    await bus.publish([event])
    assert orders == [event.aggregate_id]
    assert audit == ["OrderCreated"]

    # Fire and forget
    later = created()
    await bus.publish([later], background=True)
    await bus.publish([shipped(later.aggregate_id)], background=True)

    # Graceful shutdown: waits for the background publishes and their handlers
    await bus.shutdown(timeout=30.0)
    assert orders == [event.aggregate_id, later.aggregate_id]
    assert audit == ["OrderCreated", "OrderCreated", "OrderShipped"]


async def test_subscribe_all_takes_an_event_subscriber() -> None:
    from eventsource.bus.memory import InMemoryEventBus

    subscriber = SubscriberProjection()
    bus = InMemoryEventBus(registry=registry)
    bus.subscribe_all(subscriber)
    first = created()
    await bus.publish([first, shipped(first.aggregate_id)])
    await bus.shutdown()
    assert [(type(e), e.event_id) for e in subscriber.seen] == [
        (OrderCreated, first.event_id),
        (OrderShipped, subscriber.seen[1].event_id),
    ]


async def test_async_event_handler_base_class() -> None:
    from eventsource import AsyncEventHandler, InMemoryEventBus

    class Counter(AsyncEventHandler):
        def __init__(self) -> None:
            self.count = 0

        async def handle(self, event: DomainEvent) -> None:
            self.count += 1

    counter = Counter()
    bus = InMemoryEventBus(registry=registry)
    bus.subscribe(OrderCreated, counter)
    await bus.publish([created(), created()])
    await bus.shutdown()
    assert counter.count == 2


# -- Custom Event Bus --------------------------------------------------------------------


async def test_custom_event_bus_extension_point() -> None:
    """The guide's `KafkaEventBus(EventBus)` sketch: override `publish` (and `subscribe`),
    fill in "the other abstract methods"; an in-process list stands in for Kafka."""
    from eventsource import EventBus, EventBusConfig, EventHandler, EventHandlerFunc
    from eventsource.bus.interface import BusDeadLetter

    class ListEventBus(EventBus):
        def __init__(self) -> None:
            super().__init__(EventBusConfig(), registry)
            self.sent: list[DomainEvent] = []
            self.subscribed: list[str] = []

        async def publish(
            self,
            events: Sequence[DomainEvent],
            background: bool = False,
        ) -> None:
            await super().publish(events, background=background)

        def subscribe(
            self,
            event_type: type[DomainEvent],
            handler: EventHandler | EventHandlerFunc,
        ) -> None:
            self.subscribed.append(event_type.type_name())
            super().subscribe(event_type, handler)

        async def _publish(self, events: Sequence[DomainEvent]) -> None:
            self.sent.extend(events)

        async def start_consuming(self) -> None: ...

        async def stop_consuming(self) -> None: ...

        async def abort(self) -> None: ...

        @property
        def consuming(self) -> bool:
            return False

        async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
            return []

    bus = ListEventBus()
    bus.subscribe(OrderCreated, lambda event: None)
    event = created()
    await bus.publish([event], background=True)
    await bus.shutdown(timeout=30.0)
    assert bus.sent == [event]
    assert bus.subscribed == ["OrderCreated"]


async def test_custom_event_bus_overriding_publish_itself() -> None:
    """The sketch as written: `publish` does the sending and `_publish` is left out; the bus
    can be made, its internal send path goes to that `publish`, and `shutdown` works."""
    from eventsource import EventBus, EventBusConfig
    from eventsource.bus.interface import BusDeadLetter

    class KafkaEventBus(EventBus):
        def __init__(self) -> None:
            super().__init__(EventBusConfig(), registry)
            self.sent: list[DomainEvent] = []

        async def publish(
            self,
            events: Sequence[DomainEvent],
            background: bool = False,
        ) -> None:
            self.sent.extend(events)  # "Implement Kafka publishing"

        async def start_consuming(self) -> None: ...

        async def stop_consuming(self) -> None: ...

        async def abort(self) -> None: ...

        @property
        def consuming(self) -> bool:
            return False

        async def dead_letters(self, limit: int = 100) -> list[BusDeadLetter]:
            return []

    bus = KafkaEventBus()  # instantiable: `_publish` comes from its `publish`
    event = created()
    await bus.publish([event])
    await bus._publish([event])
    await bus.shutdown(timeout=30.0)
    assert bus.sent == [event, event]


# -- RedisEventBus -------------------------------------------------------------------------


@pytest.mark.redis
async def test_redis_bus_as_in_the_guide(redis_url: str, redis_prefix: str) -> None:
    from eventsource.bus import RedisEventBus, RedisEventBusConfig

    config = RedisEventBusConfig(
        redis_url=redis_url,
        stream_prefix=redis_prefix,
        consumer_group="projections",
    )
    assert config.url == redis_url
    bus = RedisEventBus(config=config, event_registry=registry)

    handled: list[UUID] = []
    done = asyncio.Event()

    async def order_handler(event: OrderCreated) -> None:
        handled.append(event.aggregate_id)
        done.set()

    await bus.connect()
    bus.subscribe(OrderCreated, order_handler)
    event = created()
    await bus.publish([event])
    consumer = asyncio.create_task(bus.start_consuming())  # Blocks, processing events
    await done.wait()
    assert not consumer.done()  # still blocking while it consumes
    await bus.shutdown(timeout=30.0)
    await consumer  # returns once the bus is shut down
    assert handled == [event.aggregate_id]
    stats = bus.stats
    from eventsource import RedisEventBusStats

    assert isinstance(stats, RedisEventBusStats)
    assert (stats.published, stats.handled) == (1, 1)


@pytest.mark.redis
async def test_redis_start_consuming_without_connect_returns(
    redis_url: str, redis_prefix: str
) -> None:
    from eventsource.bus import RedisEventBus, RedisEventBusConfig

    bus = RedisEventBus(RedisEventBusConfig(url=redis_url, stream_prefix=redis_prefix))
    await bus.start_consuming()  # the preferred flow: returns once registered
    assert bus.consuming
    await bus.shutdown()


def test_redis_config_refuses_two_different_urls() -> None:
    from eventsource.bus import RedisEventBus, RedisEventBusConfig

    with pytest.raises(ConfigurationError, match="url="):
        RedisEventBusConfig(url="redis://127.0.0.1:6379/1", redis_url="redis://127.0.0.1:6379/2")
    config = RedisEventBusConfig(url="redis://127.0.0.1:6379/1")
    with pytest.raises(ConfigurationError, match="registry="):
        RedisEventBus(config, registry=EventRegistry(), event_registry=EventRegistry())


@pytest.mark.redis
async def test_cancelling_the_blocking_start_consuming_stops_the_consumer(
    redis_url: str, redis_prefix: str
) -> None:
    from eventsource.bus import RedisEventBus, RedisEventBusConfig

    bus = RedisEventBus(
        RedisEventBusConfig(redis_url=redis_url, stream_prefix=redis_prefix),
        event_registry=registry,
    )
    running = asyncio.Event()
    bus.subscribe(OrderCreated, lambda event: running.set())
    await bus.connect()
    await bus.publish([created()])
    consumer = asyncio.create_task(bus.start_consuming())
    await running.wait()
    assert bus.consuming
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    assert not bus.consuming
    await bus.shutdown()
